/**
 * What `audit:verify` proves, through the CLI function and its exit code, on real database files
 * written by the real audit log: every kind of tampering by someone who can write the file but does
 * not hold AUDIT_SECRET_KEY fails, and the legitimate rewrites (retention, erasure, a restart with
 * the same key) pass.
 */
import type { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { COMMANDS } from "../../../src/cli/commands";
import { runCli } from "../../../src/cli/run";
import { AuditKeys, legacyRowHash } from "../../../src/plugins/audit/chain";
import type { AuditEventType } from "../../../src/plugins/audit/events";
import { createServices } from "../../../src/services";
import { buildTestApp, LogCapture, send, type TestApp } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";

const AUDIT_KEY = "audit-test-key-6f1c9a2e4b7d0358aa41c2e9f07b3d56";
const DAY_MS = 24 * 60 * 60 * 1000;

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

async function verify(app: TestApp, extra: string[] = [], env: Record<string, string> = {}) {
  return cliInProcess(["audit:verify", ...extra], {
    DATABASE_PATH: app.databasePath,
    AUDIT_SECRET_KEY: AUDIT_KEY,
    ...env,
  });
}

/** The last `audit chain head` line the service logged. */
function loggedHead(app: TestApp): { head: string; count: number } {
  const lines = app.logs.entries.filter((e) => e.msg === "audit chain head");
  const last = lines.at(-1)!;
  return { head: last.auditHead as string, count: last.auditCount as number };
}

/** The lines saying the chain went back below a head the service logged. */
function wentBackLines(app: TestApp) {
  return app.logs.entries.filter((e) => String(e.msg).startsWith("the audit chain went back"));
}

/** One more event, written, and the head logged as the service's timer logs it. */
function oneMoreEvent(audit: TestApp["services"]["audit"], actor: string) {
  audit.record({ type: "auth.logout", outcome: "success", actor });
  audit.flush();
  audit.logHead();
}

/**
 * A log with eight rows: two users' events with addresses, an admin action, and the first user
 * erased (rows 1 and 2 rewritten by an authenticated erasure). The head is logged at the end.
 */
function seeded(clock = new ManualClock()) {
  current = buildTestApp({ env: { AUDIT_SECRET_KEY: AUDIT_KEY }, clock });
  const { audit } = current.services;
  const event = (type: AuditEventType, actor: string | null, ip: string | null, n: number) =>
    audit.record({
      type,
      outcome: "success",
      actor,
      ip,
      route: "/x",
      requestId: `r${n}`,
      detail: { n },
    });
  event("auth.login.succeeded", "user:alice", "192.0.2.1", 1);
  event("auth.logout", "user:alice", "192.0.2.1", 2);
  event("auth.login.succeeded", "user:bob", "192.0.2.2", 3);
  event("admin.key.created", "user:bob", "192.0.2.2", 4);
  event("auth.login.failed", "user:bob", "198.51.100.7", 5);
  event("auth.logout", "user:bob", "192.0.2.2", 6);
  audit.pseudonymise("user:alice", audit.pseudonymOf("user:alice"));
  event("admin.key.created", "user:bob", "192.0.2.2", 7);
  event("auth.logout", "user:bob", "192.0.2.2", 8);
  audit.logHead(true);
  const sqlite = current.db.$client;
  return { app: current, sqlite, audit, clock };
}

/** Recomputes every hash from row `fromId` on, as an attacker without the key can. */
function rechain(sqlite: Database, fromId: number, rowHash: (prev: string, row: never) => string) {
  const rows = sqlite
    .query(
      `SELECT id, at, type, route, request_id AS requestId, outcome, detail,
              subject_commit AS subjectCommit, prev_hash AS prevHash, hash
       FROM audit_events ORDER BY id`,
    )
    .all() as { id: number; prevHash: string; hash: string }[];
  let prev: string | null = null;
  for (const row of rows) {
    if (row.id >= fromId) {
      const hash = rowHash(prev ?? row.prevHash, row as never);
      sqlite.run("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE id = ?", [
        prev ?? row.prevHash,
        hash,
        row.id,
      ]);
      prev = hash;
    } else {
      prev = row.hash;
    }
  }
}

const attackerKeys = new AuditKeys("attacker-guess-0000000000000000000000000000");

// Row 3 is a live row (salt kept); row 1 was erased by the service (salt dropped, erasure record).
const columnEdits: [string, string][] = [
  ["id", "UPDATE audit_events SET id = 100 WHERE id = 8"],
  ["at", "UPDATE audit_events SET at = at + 1 WHERE id = 3"],
  ["type", "UPDATE audit_events SET type = 'auth.logout' WHERE id = 3"],
  ["actor", "UPDATE audit_events SET actor = 'user:mallory' WHERE id = 3"],
  ["actor to NULL", "UPDATE audit_events SET actor = NULL WHERE id = 3"],
  ["ip", "UPDATE audit_events SET ip = '203.0.113.9' WHERE id = 3"],
  ["ip to NULL", "UPDATE audit_events SET ip = NULL WHERE id = 3"],
  ["route", "UPDATE audit_events SET route = '/y' WHERE id = 3"],
  ["route to NULL", "UPDATE audit_events SET route = NULL WHERE id = 3"],
  ["request_id", "UPDATE audit_events SET request_id = 'other' WHERE id = 3"],
  ["request_id to NULL", "UPDATE audit_events SET request_id = NULL WHERE id = 3"],
  ["outcome", "UPDATE audit_events SET outcome = 'failure' WHERE id = 3"],
  ["detail", `UPDATE audit_events SET detail = '{"n":99}' WHERE id = 3`],
  [
    "subject_salt",
    "UPDATE audit_events SET subject_salt = (CASE WHEN substr(subject_salt, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END) || substr(subject_salt, 3) WHERE id = 3",
  ],
  ["subject_salt to NULL", "UPDATE audit_events SET subject_salt = NULL WHERE id = 3"],
  [
    "subject_commit",
    "UPDATE audit_events SET subject_commit = (CASE WHEN substr(subject_commit, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END) || substr(subject_commit, 3) WHERE id = 3",
  ],
  [
    "prev_hash",
    "UPDATE audit_events SET prev_hash = (CASE WHEN substr(prev_hash, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END) || substr(prev_hash, 3) WHERE id = 3",
  ],
  [
    "hash",
    "UPDATE audit_events SET hash = (CASE WHEN substr(hash, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END) || substr(hash, 3) WHERE id = 8",
  ],
  ["key_id", "UPDATE audit_events SET key_id = 'ffffffffffffffff' WHERE id = 3"],
  ["key_id to NULL", "UPDATE audit_events SET key_id = NULL WHERE id = 3"],
  [
    "erasure_mac on a live row",
    "UPDATE audit_events SET erasure_mac = (SELECT erasure_mac FROM audit_events WHERE id = 1) WHERE id = 3",
  ],
  [
    "erasure_mac to NULL on an erased row",
    "UPDATE audit_events SET erasure_mac = NULL WHERE id = 1",
  ],
  [
    "erased row's actor",
    "UPDATE audit_events SET actor = 'erased:000000000000000000000000' WHERE id = 1",
  ],
  ["erased row's ip", "UPDATE audit_events SET ip = '192.0.2.1' WHERE id = 1"],
  ["erased row's actor to NULL", "UPDATE audit_events SET actor = NULL WHERE id = 1"],
  [
    "erased row's salt set (commitment brute force)",
    "UPDATE audit_events SET subject_salt = '00000000000000000000000000000000' WHERE id = 1",
  ],
];

describe("audit:verify fails on tampering", () => {
  test("an untampered seeded log verifies, with its logged anchor", async () => {
    const { app } = seeded();
    const { head, count } = loggedHead(app);
    expect(count).toBe(8);
    const result = await verify(app, ["--head", head, "--count", String(count)]);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(result.stdout).toContain("audit chain intact: 8 rows verified");
    expect(result.stdout).toContain("anchor at row 8 confirmed");
  });

  test.each(columnEdits)("edit of %s", async (_name, sql) => {
    const { app, sqlite } = seeded();
    sqlite.run(sql);
    const result = await verify(app);
    expect(result.code).toBe(1);
    expect(result.stderr).toStartWith("palisade audit:verify: chain broken at ");
  });

  test("the original attack: actor and address rewritten with the salt set to NULL", async () => {
    const { app, sqlite } = seeded();
    sqlite.run(
      "UPDATE audit_events SET actor = 'user:mallory', ip = '203.0.113.1', subject_salt = NULL WHERE id = 4",
    );
    const result = await verify(app);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      "chain broken at row 4 (its actor, address or detail was rewritten without an authenticated erasure)",
    );
  });

  const structural: [string, (sqlite: Database) => void, boolean][] = [
    [
      "an inserted row at the end, hashed without the key",
      (sqlite) => {
        const last = sqlite
          .query("SELECT * FROM audit_events ORDER BY id DESC LIMIT 1")
          .get() as Record<string, unknown>;
        const fields = {
          ...last,
          at: (last.at as number) + 1,
          type: "auth.login.succeeded",
          requestId: null,
          subjectCommit: last.subject_commit,
        } as never;
        sqlite.run(
          `INSERT INTO audit_events (id, at, type, actor, ip, route, request_id, outcome, detail,
             subject_salt, subject_commit, prev_hash, hash, key_id)
           SELECT id + 1, at + 1, 'auth.login.succeeded', actor, ip, route, NULL, outcome, detail,
             subject_salt, subject_commit, hash, ?, key_id FROM audit_events WHERE id = 8`,
          [legacyRowHash(last.hash as string, fields)],
        );
      },
      false,
    ],
    [
      "a copy of a row inserted in the middle (ids shifted)",
      (sqlite) => {
        sqlite.run("UPDATE audit_events SET id = id + 100 WHERE id > 4");
        sqlite.run("UPDATE audit_events SET id = id - 99 WHERE id > 100");
        sqlite.run(
          `INSERT INTO audit_events (id, at, type, actor, ip, route, request_id, outcome, detail,
             subject_salt, subject_commit, prev_hash, hash, key_id, erasure_mac)
           SELECT 5, at, type, actor, ip, route, request_id, outcome, detail, subject_salt,
             subject_commit, prev_hash, hash, key_id, erasure_mac FROM audit_events WHERE id = 4`,
        );
      },
      false,
    ],
    [
      "a deleted middle row",
      (sqlite) => sqlite.run("DELETE FROM audit_events WHERE id = 5"),
      false,
    ],
    [
      "deleted oldest rows, no checkpoint",
      (sqlite) => sqlite.run("DELETE FROM audit_events WHERE id <= 3"),
      false,
    ],
    [
      "deleted oldest rows and a forged checkpoint (random MAC)",
      (sqlite) => {
        const row = sqlite.query("SELECT hash FROM audit_events WHERE id = 3").get() as {
          hash: string;
        };
        sqlite.run("DELETE FROM audit_events WHERE id <= 3");
        sqlite.run(
          `INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count, key_id, mac)
           VALUES (0, 3, ?, 3, (SELECT key_id FROM audit_events LIMIT 1), ?)`,
          [row.hash, "ab".repeat(32)],
        );
      },
      false,
    ],
    [
      "deleted oldest rows and a checkpoint MACed with a guessed key",
      (sqlite) => {
        const row = sqlite.query("SELECT hash FROM audit_events WHERE id = 3").get() as {
          hash: string;
        };
        sqlite.run("DELETE FROM audit_events WHERE id <= 3");
        const checkpoint = { createdAt: 0, lastDeletedId: 3, lastHash: row.hash, deletedCount: 3 };
        sqlite.run(
          `INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count, key_id, mac)
           VALUES (0, 3, ?, 3, (SELECT key_id FROM audit_events LIMIT 1), ?)`,
          [row.hash, attackerKeys.checkpointMac(checkpoint)],
        );
      },
      false,
    ],
    [
      "deleted oldest rows and a checkpoint without key or MAC (the pre-upgrade form)",
      (sqlite) => {
        const row = sqlite.query("SELECT hash FROM audit_events WHERE id = 3").get() as {
          hash: string;
        };
        sqlite.run("DELETE FROM audit_events WHERE id <= 3");
        sqlite.run(
          `INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count)
           VALUES (0, 3, ?, 3)`,
          [row.hash],
        );
      },
      false,
    ],
    [
      "an edit re-chained with unkeyed SHA-256",
      (sqlite) => {
        sqlite.run(`UPDATE audit_events SET detail = '{"n":0}' WHERE id = 4`);
        rechain(sqlite, 4, (prev, row) => legacyRowHash(prev, row));
      },
      false,
    ],
    [
      "an edit re-chained with a guessed key (key id kept)",
      (sqlite) => {
        sqlite.run("UPDATE audit_events SET outcome = 'failure' WHERE id = 4");
        rechain(sqlite, 4, (prev, row) => attackerKeys.rowHash(prev, row));
      },
      false,
    ],
    [
      "an edit re-chained with a guessed key (its key id written too)",
      (sqlite) => {
        sqlite.run("UPDATE audit_events SET outcome = 'failure' WHERE id = 4");
        sqlite.run("UPDATE audit_events SET key_id = ?", [attackerKeys.keyId]);
        rechain(sqlite, 1, (prev, row) => attackerKeys.rowHash(prev, row));
      },
      false,
    ],
    [
      "a forged pseudonymisation record: another row's erasure MAC copied",
      (sqlite) => {
        sqlite.run(
          `UPDATE audit_events SET actor = (SELECT actor FROM audit_events WHERE id = 1), ip = NULL,
             subject_salt = NULL, erasure_mac = (SELECT erasure_mac FROM audit_events WHERE id = 1)
           WHERE id = 4`,
        );
      },
      false,
    ],
    [
      "a forged pseudonymisation record: erasure MAC made with a guessed key",
      (sqlite) => {
        const row = sqlite
          .query("SELECT subject_commit AS c, detail AS d FROM audit_events WHERE id = 4")
          .get() as { c: string; d: string };
        const pseudonym = attackerKeys.pseudonym("user:bob");
        sqlite.run(
          "UPDATE audit_events SET actor = ?, ip = NULL, subject_salt = NULL, erasure_mac = ? WHERE id = 4",
          [
            pseudonym,
            attackerKeys.erasureMac({
              id: 4,
              subjectCommit: row.c,
              actor: pseudonym,
              ip: null,
              detail: row.d,
            }),
          ],
        );
      },
      false,
    ],
    [
      "reordered rows: the contents of rows 3 and 4 swapped",
      (sqlite) => {
        sqlite.run("UPDATE audit_events SET id = 1000 WHERE id = 3");
        sqlite.run("UPDATE audit_events SET id = 3 WHERE id = 4");
        sqlite.run("UPDATE audit_events SET id = 4 WHERE id = 1000");
      },
      false,
    ],
    [
      "deleted newest rows (detected against the logged anchor)",
      (sqlite) => sqlite.run("DELETE FROM audit_events WHERE id >= 7"),
      true,
    ],
    [
      "every row and checkpoint deleted (detected against the logged anchor)",
      (sqlite) => {
        sqlite.run("DELETE FROM audit_events");
        sqlite.run("DELETE FROM audit_checkpoints");
      },
      true,
    ],
  ];

  test.each(structural)("%s", async (_name, tamper, withAnchor) => {
    const { app, sqlite } = seeded();
    const anchor = loggedHead(app);
    const flags = withAnchor ? ["--head", anchor.head, "--count", String(anchor.count)] : [];
    // The table is intact before the attack, with the same flags.
    expect((await verify(app, flags)).code).toBe(0);
    tamper(sqlite);
    const result = await verify(app, flags);
    expect(result.code).toBe(1);
    expect(result.stderr.split("\n")).toHaveLength(1);
  });

  test.each(["-9007199254740993", "9007199254740992", "9223372036854775807"])(
    "a copy of the last row at id %s is named as the file holds it, by audit:verify and db:verify (probe 58a F3)",
    async (id) => {
      const { app, sqlite } = seeded();
      const anchor = loggedHead(app);
      sqlite.run(
        `INSERT INTO audit_events SELECT ${id}, ${Object.keys(
          sqlite.query("SELECT * FROM audit_events LIMIT 1").get() as object,
        )
          .filter((column) => column !== "id")
          .join(
            ", ",
          )} FROM audit_events WHERE id = (SELECT max(id) FROM audit_events WHERE id < 100)`,
      );
      for (const flags of [[], ["--head", anchor.head, "--count", String(anchor.count)]]) {
        const result = await verify(app, flags);
        expect(result.code).toBe(1);
        expect(result.stderr).toBe(
          `palisade audit:verify: chain broken at row ${id} (its id is past any id Palisade writes: it was written into the database file); ${id.startsWith("-") ? 0 : anchor.count} rows before it verified`,
        );
      }
      const checked = await cliInProcess(["db:verify"], {
        DATABASE_PATH: app.databasePath,
        AUDIT_SECRET_KEY: AUDIT_KEY,
      });
      expect(checked.code).toBe(1);
      expect(`${checked.stdout}\n${checked.stderr}`).toContain(`row ${id} (its id is past any id`);
    },
  );

  test("deleted newest rows followed by new events: the anchor no longer matches, and the ids have a gap", async () => {
    const { app, sqlite, audit } = seeded();
    const anchor = loggedHead(app);
    sqlite.run("DELETE FROM audit_events WHERE id >= 7");
    audit.record({ type: "auth.logout", outcome: "success", actor: "user:carol" });
    audit.record({ type: "auth.logout", outcome: "success", actor: "user:carol" });
    audit.record({ type: "auth.logout", outcome: "success", actor: "user:carol" });
    const anchored = await verify(app, ["--head", anchor.head, "--count", String(anchor.count)]);
    expect(anchored.code).toBe(1);
    const plain = await verify(app);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toContain("rows 7 to 8 before it are missing");
  });

  test("the service does not log the head of a chain cut below a head it logged as if nothing happened: an error, and tampering recorded, which pages (probe 90l F1)", async () => {
    const { app, sqlite, audit } = seeded();
    const anchor = loggedHead(app);
    // The newest rows deleted and the sequence lowered, as someone with the file can: the ids
    // are written again, with other hashes.
    sqlite.run(`DELETE FROM audit_events WHERE id > ${anchor.count - 2}`);
    sqlite.run(`UPDATE sqlite_sequence SET seq = ${anchor.count - 2} WHERE name = 'audit_events'`);
    audit.logHead();
    const wentBack = wentBackLines(app);
    expect(wentBack).toHaveLength(1);
    expect(wentBack[0]).toMatchObject({
      level: "error",
      earlierCount: anchor.count,
      auditCount: anchor.count - 2,
    });
    audit.flush();
    const recorded = sqlite
      .query("SELECT detail FROM audit_events WHERE type = 'audit.chain_went_back'")
      .all() as { detail: string }[];
    expect(recorded.map((row) => JSON.parse(row.detail))).toEqual([
      { earlierCount: anchor.count, earlierHead: anchor.head, count: anchor.count - 2 },
    ]);
    const metrics = await (await send(app, "/metrics", { peer: "127.0.0.1" })).text();
    expect(metrics).toContain('audit_tamper_events_recent{type="audit.chain_went_back"} 1');

    app.close();
    // Written again up to the same count, with other rows: the same head count, another hash.
    const again = seeded();
    const before = loggedHead(again.app);
    again.sqlite.run(`DELETE FROM audit_events WHERE id = ${before.count}`);
    again.sqlite.run(
      `UPDATE sqlite_sequence SET seq = ${before.count - 1} WHERE name = 'audit_events'`,
    );
    oneMoreEvent(again.audit, "user:mallory");
    expect(wentBackLines(again.app)).toHaveLength(1);
    again.app.close();
    // The cut covered by a checkpoint written into the file, not made with the key (90n F3).
    const covered = seeded();
    const head = loggedHead(covered.app);
    covered.sqlite.run(`DELETE FROM audit_events WHERE id > ${head.count - 3}`);
    covered.sqlite.run(
      `INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count, key_id, mac)
       VALUES (1, ${head.count}, '${head.head}', ${head.count}, 'k', '00')`,
    );
    oneMoreEvent(covered.audit, "user:mallory");
    expect(wentBackLines(covered.app)).toHaveLength(1);
    covered.app.close();
    // An honest chain growing says nothing.
    const honest = seeded();
    oneMoreEvent(honest.audit, "user:bob");
    expect(wentBackLines(honest.app)).toEqual([]);
  });

  test("with LOG_LEVEL=warn or error the anchor lines are logged at that level, not dropped (probe 90l F2)", async () => {
    for (const level of ["warn", "error"] as const) {
      const app = buildTestApp({ env: { AUDIT_SECRET_KEY: AUDIT_KEY, LOG_LEVEL: level } });
      try {
        app.services.audit.record({ type: "auth.logout", outcome: "success", actor: "user:bob" });
        app.services.audit.flush();
        app.services.audit.logHead();
        const anchors = app.logs.entries.filter((e) => e.msg === "audit chain head");
        expect(anchors.length).toBeGreaterThan(0);
        expect(anchors.at(-1)).toMatchObject({ level });
      } finally {
        app.close();
      }
    }
  });

  test("an anchor that does not match an intact chain is said to be the anchor's fault, not a break before it (probe 26f F4)", async () => {
    const { app } = seeded();
    const anchor = loggedHead(app);
    const wrong = await verify(app, ["--head", "a".repeat(64), "--count", String(anchor.count)]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe(
      `palisade audit:verify: the chain's ${anchor.count} rows verify, but row ${anchor.count} does not match the anchor (its hash differs from the anchor: the chain was rewritten since)`,
    );
    const early = await verify(app, ["--head", "a".repeat(64), "--count", "3"]);
    expect(early.stderr).toStartWith(
      `palisade audit:verify: the chain's ${anchor.count} rows verify, but row 3 does not match the anchor`,
    );
    const ahead = await verify(app, ["--head", anchor.head, "--count", String(anchor.count + 5)]);
    expect(ahead.stderr).toContain("but the head does not match the anchor");
  });

  test("a wrong AUDIT_SECRET_KEY is named as such", async () => {
    const { app } = seeded();
    const result = await verify(app, [], {
      AUDIT_SECRET_KEY: "a-different-key-9d8c7b6a5f4e3d2c1b0a99887766",
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("keyed with another AUDIT_SECRET_KEY");
  });

  test("a key id the file holds as a BLOB is named as SQL writes one, not as its bytes joined by commas (probe 82i N1)", async () => {
    const { app } = seeded();
    app.db.$client.run("UPDATE audit_events SET key_id = X'ff00' WHERE id = 2");
    const result = await verify(app, []);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("key id x'ff00'");
  });

  test("audit:tail shows the rows without salts, commitments or MACs", async () => {
    const { app } = seeded();
    const out: string[] = [];
    const env = { DATABASE_PATH: app.databasePath, AUDIT_SECRET_KEY: AUDIT_KEY };
    const io = { out: (l: string) => out.push(l), err: () => {}, readStdin: async () => "" };
    expect(await runCli(["audit:tail", "--limit", "2", "--json"], env, io, COMMANDS)).toBe(0);
    expect(await runCli(["audit:tail"], env, io, COMMANDS)).toBe(0);
    expect(await runCli(["audit:tail", "--limit", "0"], env, io, COMMANDS)).toBe(2);
    const row = JSON.parse(out[0]!);
    expect(row).toMatchObject({ id: 7, type: "admin.key.created" });
    expect(Object.keys(row)).not.toContain("erasureMac");
    expect(Object.keys(row)).not.toContain("subjectSalt");
  });

  test("an erased account's rows put back from a copy taken before the erasure fail verification, the erasure's record kept or not, a row naming it in its detail alone too (probes 90l F3, 90n F1, F2)", async () => {
    current = buildTestApp({ env: { AUDIT_SECRET_KEY: AUDIT_KEY } });
    const app = current;
    const sqlite = app.db.$client;
    const carol = await signUp(app);
    // A row naming the account in its detail alone, as an admin's read of its usage does.
    app.services.audit.record({
      type: "admin.usage.queried",
      outcome: "success",
      actor: "user:an-admin",
      detail: { principal: `user:${carol.userId}` },
    });
    app.services.audit.flush();
    const namingRow = sqlite
      .query(
        "SELECT id, actor, ip, detail, subject_salt AS salt FROM audit_events WHERE type = 'admin.usage.queried'",
      )
      .get() as { id: number; actor: string; ip: string | null; detail: string; salt: string };
    const before = sqlite
      .query(
        "SELECT id, actor, ip, detail, subject_salt AS salt FROM audit_events WHERE actor = ?1",
      )
      .all(`user:${carol.userId}`) as {
      id: number;
      actor: string;
      ip: string | null;
      detail: string | null;
      salt: string | null;
    }[];
    expect(before.length).toBeGreaterThan(0);
    const erased = await send(app, "/api/me", {
      method: "DELETE",
      headers: bearer(carol.accessToken),
    });
    expect(erased.status).toBe(204);
    app.services.audit.flush();
    expect((await verify(app)).code).toBe(0);
    // Put back as the copy had them, the erasure's record left in place (90n F1): each row
    // matches its hash.
    const putBack = sqlite.query(
      "UPDATE audit_events SET actor = ?2, ip = ?3, detail = ?4, subject_salt = ?5, erasure_mac = NULL WHERE id = ?1",
    );
    type Columns = {
      id: number;
      actor: string | null;
      ip: string | null;
      detail: string | null;
      salt: string | null;
      mac: string | null;
    };
    const erasedRows = sqlite
      .query(
        "SELECT id, actor, ip, detail, subject_salt AS salt, erasure_mac AS mac FROM audit_events",
      )
      .all() as Columns[];
    for (const row of before) putBack.run(row.id, row.actor, row.ip, row.detail, row.salt);
    const result = await verify(app);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`row ${before[0]!.id}`);
    expect(result.stderr).toContain("put back from a copy taken before the erasure");
    // As the erasure left them again; then the row naming the account in its detail alone, put
    // back alone (90n F2).
    const erasedAgain = sqlite.query(
      "UPDATE audit_events SET actor = ?2, ip = ?3, detail = ?4, subject_salt = ?5, erasure_mac = ?6 WHERE id = ?1",
    );
    for (const row of erasedRows)
      erasedAgain.run(row.id, row.actor, row.ip, row.detail, row.salt, row.mac);
    expect((await verify(app)).code).toBe(0);
    putBack.run(namingRow.id, namingRow.actor, namingRow.ip, namingRow.detail, namingRow.salt);
    const detailOnly = await verify(app);
    expect(detailOnly.code).toBe(1);
    expect(detailOnly.stderr).toContain(`row ${namingRow.id}`);
  });

  test("--head and --count are checked as usage", async () => {
    const { app } = seeded();
    expect((await verify(app, ["--head", "zz", "--count", "3"])).code).toBe(2);
    expect((await verify(app, ["--head", "a".repeat(64)])).code).toBe(2);
  });
});

describe("audit:verify accepts the legitimate rewrites", () => {
  test("retention pruning leaves an authenticated checkpoint; newer anchors still confirm", async () => {
    const { app, audit, clock } = seeded();
    clock.advance(10 * DAY_MS);
    audit.record({ type: "auth.logout", outcome: "success", actor: "user:bob", ip: "192.0.2.2" });
    audit.logHead();
    const anchor = loggedHead(app);
    expect(audit.prune(clock.now() - DAY_MS, clock.now(), 5)).toBe(5);
    expect(audit.prune(clock.now() - DAY_MS, clock.now(), 5)).toBe(3);
    const result = await verify(app, ["--head", anchor.head, "--count", String(anchor.count)]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("1 rows verified");
    // Every row pruned: the checkpoint alone still carries the head.
    clock.advance(10 * DAY_MS);
    expect(audit.prune(clock.now() - DAY_MS, clock.now())).toBe(1);
    expect((await verify(app, ["--head", anchor.head, "--count", String(anchor.count)])).code).toBe(
      0,
    );
    audit.record({ type: "auth.logout", outcome: "success", actor: "user:bob" });
    expect((await verify(app)).stdout).toContain("head");
    expect((await verify(app)).code).toBe(0);
    // An anchor older than what retention kept cannot be confirmed any more.
    const stale = await verify(app, ["--head", "0".repeat(64), "--count", "3"]);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain("removed by retention");
  });

  test("retention refuses to checkpoint over rows that do not verify", async () => {
    const { app, sqlite, audit, clock } = seeded();
    sqlite.run("UPDATE audit_events SET actor = 'user:mallory' WHERE id = 3");
    clock.advance(10 * DAY_MS);
    expect(audit.prune(clock.now() - DAY_MS, clock.now())).toBe(0);
    expect(sqlite.query("SELECT count(*) AS n FROM audit_events").get()).toEqual({ n: 8 });
    expect((await verify(app)).code).toBe(1);
    expect(app.logs.text).toContain("audit retention skipped");
  });

  test("erasure through DELETE /api/me verifies; a tampered row of the user stays unverifiable", async () => {
    current = buildTestApp({ env: { AUDIT_SECRET_KEY: AUDIT_KEY } });
    const alice = await signUp(current);
    const bob = await signUp(current);
    current.services.audit.flush();
    const sqlite = current.db.$client;
    // Someone rewrote one of Bob's rows to look like Alice's before she asks for erasure.
    const bobRow = sqlite
      .query("SELECT id FROM audit_events WHERE actor = ? ORDER BY id LIMIT 1")
      .get(`user:${bob.userId}`) as { id: number };
    sqlite.run("UPDATE audit_events SET actor = ? WHERE id = ?", [
      `user:${alice.userId}`,
      bobRow.id,
    ]);
    const erased = await send(current, "/api/me", {
      method: "DELETE",
      headers: bearer(alice.accessToken),
    });
    expect(erased.status).toBe(204);
    const after = await verify(current);
    expect(after.code).toBe(1);
    expect(after.stderr).toContain(
      `row ${bobRow.id} (its actor, address or detail was rewritten without an authenticated erasure)`,
    );

    // Without the tampering, the same erasure verifies.
    current.close();
    current = buildTestApp({ env: { AUDIT_SECRET_KEY: AUDIT_KEY } });
    const carol = await signUp(current);
    await signUp(current);
    const response = await send(current, "/api/me", {
      method: "DELETE",
      headers: bearer(carol.accessToken),
    });
    expect(response.status).toBe(204);
    current.services.audit.flush();
    const rows = current.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE erasure_mac IS NOT NULL")
      .get() as { n: number };
    expect(rows.n).toBeGreaterThanOrEqual(2);
    expect((await verify(current)).code).toBe(0);
  });

  test("a restart with the same key continues the chain; the anchor from before still confirms", async () => {
    const { app } = seeded();
    const before = loggedHead(app);
    const logs = new LogCapture();
    const restarted = createServices({
      config: app.config,
      db: app.db,
      logger: (await import("../../../src/logging/logger")).createLogger({
        level: "info",
        destination: logs,
      }),
      maintenanceIntervalMs: 0,
    });
    restarted.audit.record({ type: "auth.login.succeeded", outcome: "success", actor: "user:bob" });
    restarted.runMaintenance();
    restarted.close();
    const heads = logs.entries.filter((e) => e.msg === "audit chain head");
    expect(heads.at(-1)).toMatchObject({ auditCount: 9 });
    const result = await verify(app, ["--head", before.head, "--count", String(before.count)]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("9 rows verified");
  });

  test("development without AUDIT_SECRET_KEY keeps one key in a 0600 file beside the database, shared by restarts and the CLI", async () => {
    current = buildTestApp();
    current.services.audit.record({ type: "auth.logout", outcome: "success", actor: "user:x" });
    current.services.audit.flush();
    const keyFile = `${current.databasePath}.audit-key`;
    expect(current.config.audit.developmentKeyFile).toBe(keyFile);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const result = await verify(current, [], { AUDIT_SECRET_KEY: "" });
    expect(result).toMatchObject({ code: 0 });
    expect(result.stdout).toContain("1 rows verified");
  });
});
