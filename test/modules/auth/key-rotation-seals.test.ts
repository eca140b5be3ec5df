/**
 * What a writer of the database file (without the secrets) can do to a key's rotation: whether and
 * by which key a key was rotated is its own sealed rotation mark (`replaced_by`, `successor_seal`,
 * migration 0023), whatever is done to any other row (probes 19d F3, 20a F1); a key whose lineage
 * or rotation mark fails its seal shows as such to admins (19d F2).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { applyMigrationsFrom } from "../../../src/db/migrate-from-folder";
import { successorSealing, successorsSealedMessage } from "../../../src/modules/auth/seal-upgrade";
import { createCredentialSeal } from "../../../src/plugins/auth/seal";
import { buildTestApp, send, type TestApp, tempDir } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { migrationsUpTo, migrationTagsFrom } from "../../support/migrations";
import { auditRows } from "../../support/payments";

let current: TestApp | null = null;
const cleanups: (() => void)[] = [];
afterEach(() => {
  current?.close();
  current = null;
  for (const cleanup of cleanups.splice(0)) cleanup();
});

interface KeyView {
  id: string;
  replacedBy: string | null;
  tampered: boolean;
  lineageTampered: boolean;
  rotationTampered: boolean;
}

async function setUp() {
  current = buildTestApp();
  const app = current;
  const headers = bearer((await signUp(app, { role: "admin" })).accessToken);
  const rotate = (id: string) =>
    send(app, `/api/admin/api-keys/${id}/rotate`, { headers, body: { graceMinutes: 5 } });
  const rotated = async (id: string) => {
    const response = await rotate(id);
    expect(response.status).toBe(201);
    return ((await response.json()) as { apiKey: { id: string } }).apiKey.id;
  };
  const listed = async () => {
    const response = await send(app, "/api/admin/api-keys", { headers });
    expect(response.status).toBe(200);
    const { keys } = (await response.json()) as { keys: KeyView[] };
    return new Map(keys.map((key) => [key.id, key]));
  };
  const sqlite = app.db.$client;
  const mark = (id: string) =>
    sqlite
      .query<{ replacedBy: string | null; successorSeal: string | null }, [string]>(
        "SELECT replaced_by AS replacedBy, successor_seal AS successorSeal FROM api_keys WHERE id = ?",
      )
      .get(id)!;
  const reported = () =>
    auditRows(app, "auth.credential_tampered").map((row) => JSON.parse(row.detail));
  return { app, rotate, rotated, listed, sqlite, mark, reported };
}

describe("a key's rotation mark is its own, sealed", () => {
  test("a replaced_by written into the file on a key never rotated: rotation refused and reported, shown as rotationTampered", async () => {
    const { app, rotate, listed, sqlite, reported } = await setUp();
    const target = createKey(app, ["chat"]);
    const other = createKey(app, ["chat"]);
    sqlite.run("UPDATE api_keys SET replaced_by = ? WHERE id = ?", [
      other.record.id,
      target.record.id,
    ]);
    expect((await listed()).get(target.record.id)).toMatchObject({
      replacedBy: null,
      rotationTampered: true,
      tampered: false,
    });
    expect((await rotate(target.record.id)).status).toBe(404);
    expect(reported()).toEqual([
      { table: "api_keys", id: target.record.id, part: "rotation_mark" },
    ]);
    // The key itself still works, and its neighbour is untouched.
    expect((await send(app, "/api/auth/me", { headers: { "x-api-key": target.key } })).status).toBe(
      200,
    );
    expect((await listed()).get(other.record.id)).toMatchObject({ rotationTampered: false });
    expect((await rotate(other.record.id)).status).toBe(201);
  });

  test("a rotated key stays rotated: its replaced_by cleared, pointed elsewhere or copied from another key is refused, and 404", async () => {
    const { app, rotate, rotated, listed, sqlite, mark } = await setUp();
    const target = createKey(app, ["chat"]);
    const donor = createKey(app, ["chat"]);
    const beforeRotation = mark(target.record.id).successorSeal;
    const successor = await rotated(target.record.id);
    expect(mark(target.record.id).replacedBy).toBe(successor);
    expect((await listed()).get(target.record.id)).toMatchObject({
      replacedBy: successor,
      rotationTampered: false,
    });
    const genuine = mark(target.record.id);
    const unrotatedDonor = mark(donor.record.id);
    for (const [replacedBy, successorSeal] of [
      // The key's own mark from before its rotation, written back (probe 20b F1).
      [null, beforeRotation],
      [null, genuine.successorSeal],
      [target.record.id, genuine.successorSeal],
      [null, unrotatedDonor.successorSeal],
      [null, null],
    ] as const) {
      sqlite.run("UPDATE api_keys SET replaced_by = ?, successor_seal = ? WHERE id = ?", [
        replacedBy,
        successorSeal,
        target.record.id,
      ]);
      expect((await rotate(target.record.id)).status).toBe(404);
      expect((await listed()).get(target.record.id)).toMatchObject({
        replacedBy: null,
        rotationTampered: true,
      });
    }
    // Put back as Palisade wrote it: rotated, by the same key.
    sqlite.run("UPDATE api_keys SET replaced_by = ?, successor_seal = ? WHERE id = ?", [
      genuine.replacedBy,
      genuine.successorSeal,
      target.record.id,
    ]);
    expect((await listed()).get(target.record.id)).toMatchObject({
      replacedBy: successor,
      rotationTampered: false,
    });
    expect((await rotate(target.record.id)).status).toBe(404);
  });

  test("whatever is done to the successor's row, its predecessor is not rotated twice; the successor rotates once (probe 20a F1)", async () => {
    const { app, rotate, rotated, sqlite } = await setUp();
    const target = createKey(app, ["chat"]);
    const successor = await rotated(target.record.id);
    const row = sqlite.query("SELECT * FROM api_keys WHERE id = ?").get(successor) as Record<
      string,
      string | number | null
    >;
    const hide = [
      () => sqlite.run("DELETE FROM api_keys WHERE id = ?", [successor]),
      () => sqlite.run("UPDATE api_keys SET lineage = NULL WHERE id = ?", [successor]),
      () => sqlite.run("UPDATE api_keys SET origin = 'bootstrap' WHERE id = ?", [successor]),
    ];
    const columns = Object.keys(row);
    const restore = () => {
      sqlite.run("DELETE FROM api_keys WHERE id = ?", [successor]);
      sqlite.run(
        `INSERT INTO api_keys (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`,
        columns.map((column) => row[column]!),
      );
    };
    for (const hideSuccessor of hide) {
      hideSuccessor();
      expect((await rotate(target.record.id)).status).toBe(404);
      restore();
    }
    expect(sqlite.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({ n: 2 });
    const next = await rotated(successor);
    expect((await rotate(successor)).status).toBe(404);
    expect((await rotate(next)).status).toBe(201);
  });

  test("concurrent rotations of one key make one successor", async () => {
    const { app, rotate, sqlite } = await setUp();
    const target = createKey(app, ["chat"]);
    const statuses = (await Promise.all(Array.from({ length: 6 }, () => rotate(target.record.id))))
      .map((response) => response.status)
      .sort();
    expect(statuses).toEqual([201, 404, 404, 404, 404, 404]);
    expect(sqlite.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({ n: 2 });
  });
});

describe("a key whose lineage fails its seal", () => {
  test("shows lineageTampered (tampered stays for a refused row); it cannot be rotated", async () => {
    const { app, rotate, listed, sqlite } = await setUp();
    const intact = createKey(app, ["chat"]);
    const forged = createKey(app, ["chat", "payments"]);
    sqlite.run("UPDATE api_keys SET lineage = ? WHERE id = ?", [
      intact.record.id,
      forged.record.id,
    ]);
    const keys = await listed();
    expect(keys.get(forged.record.id)).toMatchObject({
      tampered: false,
      lineageTampered: true,
      rotationTampered: false,
    });
    expect(keys.get(intact.record.id)).toMatchObject({ tampered: false, lineageTampered: false });
    expect((await rotate(forged.record.id)).status).toBe(404);
    // Its other scopes still work.
    expect((await send(app, "/api/auth/me", { headers: { "x-api-key": forged.key } })).status).toBe(
      200,
    );
  });
});

const GONE = "01a22c8b-0000-7000-8000-000000000000";

test("migration 0023 seals every key's rotation mark from the sealed lineages, not from replaced_by; only it does", () => {
  const dir = tempDir();
  cleanups.push(dir.remove);
  const db = openDatabase(join(dir.path, "rotated.db"));
  cleanups.push(() => db.$client.close());
  applyMigrationsFrom(db, migrationsUpTo(dir.path, 22));
  const seal = createCredentialSeal("a-test-audit-secret-0123456789abcdefghij");
  const insert = db.$client.prepare(
    `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin, replaced_by, lineage, lineage_seal)
     VALUES (?, 'shop', ?, 'h', '["payments"]', NULL, 1, ?, ?, ?, ?)`,
  );
  const key = (
    id: string,
    replacedBy: string | null,
    lineage: string,
    origin = "api",
    sealed = true,
  ) =>
    insert.run(
      id,
      `pal_live_${id}`,
      origin,
      replacedBy,
      lineage,
      sealed ? seal.lineage({ id, lineage }) : "forged",
    );
  // k1 rotated into k2, k2 into k3 (their lineages k1, sealed by 0022), though k2's replaced_by
  // was cleared in the file; k4 rotated into a key whose row is gone (its replaced_by is kept); k5
  // claims k4's lineage without its seal (it continues nothing, and replaces nothing); two
  // bootstrap rows of one secret (a row deleted and added again) replace nothing.
  key("k1", "k2", "k1");
  key("k2", null, "k1");
  key("k3", null, "k1");
  key("k4", GONE, "k4");
  // Text no rotation writes: none (probe 20d F3).
  key("k4b", "x".repeat(2000), "k4b");
  key("k5", null, "k4", "api", false);
  key("k6", null, "bootstrap-x", "bootstrap");
  key("k7", null, "bootstrap-x", "bootstrap");
  // A replaced_by no rotation writes (a blob): none (probe 20c F2).
  insert.run(
    "k7b",
    "pal_live_k7b",
    "api",
    new Uint8Array([1, 2]),
    "k7b",
    seal.lineage({ id: "k7b", lineage: "k7b" }),
  );
  // Before this release an ownerless key's rotation kept the old owner: u2, the successor an
  // ownerless operator key (op) made from a user's key u1, still acts for that user. A user's own
  // rotation (u3 into u4) and a revoked successor (u6) are not named.
  db.$client.run(
    "INSERT INTO users (id, email, password_hash, role, created_at, updated_at) VALUES ('alice', 'a@example.test', 'h', 'user', 1, 1)",
  );
  const owned = db.$client.prepare(
    `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin, revoked_at)
     VALUES (?, 'k', ?, 'h', '["chat"]', ?, 1, 'api', ?)`,
  );
  owned.run("op", "pal_live_op", null, null);
  for (const id of ["u1", "u2", "u3", "u4", "u5"]) owned.run(id, `pal_live_${id}`, "alice", null);
  owned.run("u6", "pal_live_u6", "alice", 5);
  const rotation = db.$client.prepare(
    `INSERT INTO audit_events (at, type, actor, outcome, detail, subject_commit, prev_hash, hash)
     VALUES (1, 'admin.key.rotated', ?, 'success', ?, 'c', 'p', 'h')`,
  );
  rotation.run("key:op", JSON.stringify({ keyId: "u1", replacedBy: "u2" }));
  rotation.run("user:alice", JSON.stringify({ keyId: "u3", replacedBy: "u4" }));
  rotation.run("key:op", JSON.stringify({ keyId: "u5", replacedBy: "u6" }));
  rotation.run("key:op", "not json");
  const sealing = successorSealing(seal);
  expect(applyMigrations(db, sealing.companions).appliedNow).toEqual(migrationTagsFrom(23));
  expect(sealing.sealed()).toEqual({ keys: 16, rotated: 3, actingForUsers: 1 });
  expect(sealing.actingForUsers()).toEqual(["u2"]);
  expect(successorsSealedMessage(sealing.sealed()!, sealing.actingForUsers())).toEndWith(
    "; 1 live keys an operator key rotated from a user's key still act for that user (u2): from this release such a rotation gives an ownerless key; revoke any not handed to that user (keys:revoke ID)",
  );
  const marks = () =>
    db.$client
      .query<
        {
          id: string;
          replacedBy: string | null;
          expiresAt: number | null;
          successorSeal: string | null;
        },
        []
      >(
        "SELECT id, replaced_by AS replacedBy, expires_at AS expiresAt, successor_seal AS successorSeal FROM api_keys WHERE id LIKE 'k%' ORDER BY id",
      )
      .all();
  expect(marks().map((row) => [row.id, row.replacedBy, seal.intact.successor(row)])).toEqual([
    ["k1", "k2", true],
    ["k2", "k3", true],
    ["k3", null, true],
    ["k4", GONE, true],
    ["k4b", null, true],
    ["k5", null, true],
    ["k6", null, true],
    ["k7", null, true],
    ["k7b", null, true],
  ]);
  // A row written after it has no mark of Palisade's: it is refused, not sealed by a later run.
  key("k8", null, "k8");
  const later = successorSealing(seal);
  expect(applyMigrations(db, later.companions).appliedNow).toEqual([]);
  expect(later.sealed()).toBeNull();
  expect(seal.intact.successor(marks().at(-1)!)).toBe(false);
});

test("a rotation's audit row says the grace the old key has, cut at its own end, and the one asked for (probe 84j F2)", async () => {
  current = buildTestApp();
  const target = current;
  const DAY = 86_400_000;
  const { record } = target.services.apiKeys.create(
    { name: "short", scopes: ["payments"], userId: null, expiresAt: Date.now() + DAY },
    "test",
  );
  target.services.apiKeys.rotate(record.id, 7 * DAY, "test");
  target.services.audit.flush();
  const row = target.db.$client
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'admin.key.rotated' ORDER BY id DESC LIMIT 1",
    )
    .get()!;
  const detail = JSON.parse(row.detail) as { graceSeconds: number; graceAskedSeconds?: number };
  expect(detail.graceSeconds).toBeLessThanOrEqual(86_400);
  expect(detail.graceSeconds).toBeGreaterThan(86_000);
  expect(detail.graceAskedSeconds).toBe(7 * 86_400);
});
