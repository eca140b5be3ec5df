import { describe, expect, test } from "bun:test";
import { applyMigrations } from "../../../src/db/migrate";
import { AuditKeys } from "../../../src/plugins/audit/chain";
import { principalsNamed, withPrincipalsReplaced } from "../../../src/plugins/audit/events";
import { verifyAuditChain } from "../../../src/plugins/audit/log";
import { buildTestApp } from "../../support/app";
import { cleanupsAfterEach } from "../../support/cleanups";
import { putBackBefore } from "../../support/migrations";

test("the principals a detail names: principal values, bare ids in id fields, a users or api_keys row's id", () => {
  expect(
    principalsNamed({
      principal: "user:u1",
      owner: "key:k0",
      sender: "whatsapp:15550001",
      keyId: "k1",
      replacedBy: "k2",
      user: "u2",
      userId: "u3",
      day: "2026-01-01",
      count: 3,
      flag: true,
      none: null,
      empty: "",
    }),
  ).toEqual([
    ["principal", "user:u1"],
    ["owner", "key:k0"],
    ["sender", "whatsapp:15550001"],
    ["keyId", "key:k1"],
    ["replacedBy", "key:k2"],
    ["user", "user:u2"],
    ["userId", "user:u3"],
  ]);
  // A row a tamper report names: whose id it is follows from its table.
  expect(principalsNamed({ table: "users", id: "u4" })).toEqual([["id", "user:u4"]]);
  expect(principalsNamed({ table: "api_keys", id: "k4", part: "lineage" })).toEqual([
    ["id", "key:k4"],
  ]);
  expect(principalsNamed({ table: "ip_blocks", id: "17" })).toEqual([]);
  expect(principalsNamed({ table: "payment_idempotency_keys", id: "user:u5" })).toEqual([
    ["id", "user:u5"],
  ]);
  // Field and table names that are Object.prototype members name nothing.
  expect(principalsNamed({ constructor: "x", __proto__: "y", toString: "z" })).toEqual([]);
  expect(principalsNamed({ table: "constructor", id: "u6" })).toEqual([]);
  // An id field already holding a principal is that principal.
  expect(principalsNamed({ keyId: "user:u7" })).toEqual([["keyId", "user:u7"]]);
});

test("replacing the principals a detail names: a key's name goes with its id; nothing named, the same object", () => {
  const detail: Record<string, string | null> = {
    keyId: "k1",
    name: "alice laptop",
    principal: "user:u1",
    day: "d",
  };
  expect(withPrincipalsReplaced(detail, (p) => (p === "key:k1" ? "erased:x" : null))).toEqual({
    keyId: "erased:x",
    name: null,
    principal: "user:u1",
    day: "d",
  });
  expect(withPrincipalsReplaced(detail, (p) => (p === "user:u1" ? "erased:y" : null))).toEqual({
    ...detail,
    principal: "erased:y",
  });
  expect(withPrincipalsReplaced(detail, () => null)).toBe(detail);
});

describe("migration 0024 on a log written before it", () => {
  const cleanups = cleanupsAfterEach();

  test("names the committed-detail rows it finds, skips the rest, and erasure then rewrites them", async () => {
    const target = buildTestApp();
    cleanups.push(() => target.close());
    const { audit } = target.services;
    const sqlite = target.db.$client;
    audit.record({
      type: "admin.usage.queried",
      outcome: "success",
      actor: "user:admin-1",
      ip: "192.0.2.1",
      detail: { principal: "user:u-9", day: "2026-01-01" },
    });
    audit.record({
      type: "admin.key.created",
      outcome: "success",
      actor: "cli",
      detail: { keyId: "k-9", name: "u-9's laptop", scopes: "chat" },
    });
    audit.record({
      type: "auth.credential_tampered",
      outcome: "denied",
      actor: "system",
      detail: { table: "users", id: "u-9" },
    });
    audit.record({ type: "admin.key.rotated", outcome: "success", detail: { n: 1 } });
    audit.flush();
    const named = () =>
      sqlite.query("SELECT name, event_id AS id FROM audit_event_names ORDER BY id, name").all();
    const written = named();
    expect(written.map((row) => (row as { name: string }).name)).toEqual([
      "user:u-9",
      "key:k-9",
      "user:u-9",
    ]);
    // As the release before this migration left the file: the rows, no table of names.
    putBackBefore(sqlite, 24);
    applyMigrations(target.db);
    expect(named()).toEqual(written);

    const pseudonym = audit.pseudonymOf("user:u-9");
    audit.pseudonymise("user:u-9", pseudonym);
    audit.pseudonymise("key:k-9", pseudonym);
    const dump = JSON.stringify(sqlite.query("SELECT actor, detail FROM audit_events").all());
    expect(dump).not.toContain("u-9");
    expect(dump).not.toContain("k-9");
    expect(verifyAuditChain(sqlite, new AuditKeys(target.config.audit.secretKey)).ok).toBe(true);
  });

  test("a detail that is not a JSON object (written into the file) names nothing and fails no upgrade", () => {
    const target = buildTestApp();
    cleanups.push(() => target.close());
    const sqlite = target.db.$client;
    putBackBefore(sqlite, 24);
    for (const [id, detail] of [
      [900, "not json"],
      [901, '["user:u-1"]'],
      [902, '"user:u-1"'],
      [903, '{"keyId": 7, "principal": ""}'],
    ] as const) {
      sqlite.run(
        `INSERT INTO audit_events (id, at, type, outcome, detail, subject_commit, prev_hash, hash)
         VALUES (?, 0, 'x', 'info', ?, 'd:0', '0', '0')`,
        [id, detail],
      );
    }
    applyMigrations(target.db);
    expect(sqlite.query("SELECT count(*) AS n FROM audit_event_names").get()).toEqual({ n: 0 });
  });
});
