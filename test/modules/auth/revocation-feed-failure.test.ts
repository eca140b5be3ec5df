/**
 * A revocation that cannot be written to the revocation feed (the file locked past the busy
 * timeout, a disk full; here the feed's id sequence written to SQLite's last id, named as such:
 * probe 58c F2) changes nothing: the key is neither revoked nor rotated, nothing is audited, the
 * key still works, and the same request succeeds once the feed can be written (probe 58a F2: the
 * key change was committed first, unaudited and not reaching any cache, and the retry was 404).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { cliInProcess } from "../../support/cli";
import { runToExit } from "../../support/process";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** Every feed insert fails (SQLITE_FULL) until the returned function is called. */
function breakFeed(target: TestApp): () => void {
  const sqlite = target.db.$client;
  sqlite.run("DELETE FROM sqlite_sequence WHERE name = 'auth_revocations'");
  sqlite.run(
    "INSERT INTO sqlite_sequence (name, seq) VALUES ('auth_revocations', 9223372036854775807)",
  );
  return () =>
    sqlite.run(
      "UPDATE sqlite_sequence SET seq = (SELECT coalesce(max(id), 0) FROM auth_revocations) WHERE name = 'auth_revocations'",
    );
}

const SEQUENCE_NAMED =
  "the revocation feed's id sequence (sqlite_sequence) is 9223372036854775807, past any id Palisade writes";

function keyRows(target: TestApp) {
  return target.db.$client
    .query<{ id: string; revokedAt: number | null; replacedBy: string | null }, []>(
      "SELECT id, revoked_at AS revokedAt, replaced_by AS replacedBy FROM api_keys ORDER BY rowid",
    )
    .all();
}

function keyEvents(target: TestApp): string[] {
  target.services.audit.flush();
  return target.db.$client
    .query<{ type: string }, []>(
      "SELECT type FROM audit_events WHERE type LIKE 'admin.key.%' AND type != 'admin.key.created' ORDER BY id",
    )
    .all()
    .map((row) => row.type);
}

const useKey = (target: TestApp, key: string) =>
  send(target, "/api/auth/me", { headers: { "x-api-key": key } });

describe("a revocation feed that cannot be written", () => {
  test("DELETE /api/admin/api-keys/:id is 500 naming the sequence and changes nothing; the retry revokes", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const { key, record } = createKey(current, ["chat"], admin.userId);
    expect((await useKey(current, key)).status).toBe(200);
    const mend = breakFeed(current);
    const revoke = () =>
      send(current!, `/api/admin/api-keys/${record.id}`, {
        method: "DELETE",
        headers: bearer(admin.accessToken),
      });
    const refused = await revoke();
    expect(refused.status).toBe(500);
    expect(((await refused.json()) as { code: string }).code).toBe("INTERNAL");
    expect(current.logs.text).toContain(SEQUENCE_NAMED);
    expect(keyRows(current).find((row) => row.id === record.id)?.revokedAt).toBeNull();
    expect(keyEvents(current)).toEqual([]);
    expect((await useKey(current, key)).status).toBe(200);

    mend();
    expect((await revoke()).status).toBe(204);
    expect(keyEvents(current)).toEqual(["admin.key.revoked"]);
    expect((await useKey(current, key)).status).toBe(401);
  });

  test("POST /api/admin/api-keys/:id/rotate is 500 and makes no successor; the retry rotates", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const { key, record } = createKey(current, ["chat"], admin.userId);
    const before = keyRows(current);
    const mend = breakFeed(current);
    const rotate = () =>
      send(current!, `/api/admin/api-keys/${record.id}/rotate`, {
        headers: bearer(admin.accessToken),
        body: { graceMinutes: 0 },
      });
    expect((await rotate()).status).toBe(500);
    expect(keyRows(current)).toEqual(before);
    expect(keyEvents(current)).toEqual([]);
    expect((await useKey(current, key)).status).toBe(200);

    mend();
    const rotated = await rotate();
    expect(rotated.status).toBe(201);
    const successor = ((await rotated.json()) as { key: string }).key;
    expect(keyEvents(current)).toEqual(["admin.key.rotated"]);
    expect((await useKey(current, successor)).status).toBe(200);
    expect((await useKey(current, key)).status).toBe(401);
  });

  test("bun run cli keys:revoke fails in one line, exit 1, and leaves the key as it was", async () => {
    current = buildTestApp();
    const { key, record } = createKey(current, ["chat"]);
    const mend = breakFeed(current);
    const env = { DATABASE_PATH: current.databasePath };
    const failed = await cliInProcess(["keys:revoke", record.id], env);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toBe("");
    expect(failed.stderr.trim().split("\n")).toEqual([
      `palisade keys:revoke: failed: IdSequenceError: ${SEQUENCE_NAMED}: it was written into the database file; restore the file from a backup`,
    ]);
    expect(keyRows(current)[0]!.revokedAt).toBeNull();
    expect(keyEvents(current)).toEqual([]);
    expect((await useKey(current, key)).status).toBe(200);

    mend();
    expect((await cliInProcess(["keys:revoke", record.id], env)).code).toBe(0);
    expect(keyRows(current)[0]!.revokedAt).not.toBeNull();
  });

  test("a row written at the last id spends the sequence too, whatever sqlite_sequence says: named as such (probe 58d F2)", async () => {
    current = buildTestApp();
    const admin = await signUp(current, { role: "admin" });
    const { key, record } = createKey(current, ["chat"], admin.userId);
    const sqlite = current.db.$client;
    sqlite.run(
      "INSERT INTO auth_revocations (id, kind, subject, created_at) VALUES (9223372036854775807, 'key', 'planted', 0)",
    );
    sqlite.run("UPDATE sqlite_sequence SET seq = 5 WHERE name = 'auth_revocations'");
    const refused = await send(current, `/api/admin/api-keys/${record.id}`, {
      method: "DELETE",
      headers: bearer(admin.accessToken),
    });
    expect(refused.status).toBe(500);
    expect(current.logs.text).toContain(
      "the revocation feed's largest id is 9223372036854775807, past any id Palisade writes: a row was written there",
    );
    expect(keyRows(current).find((row) => row.id === record.id)?.revokedAt).toBeNull();
    expect((await useKey(current, key)).status).toBe(200);
  });

  test.each([
    [
      "an infinite REAL",
      "1e999",
      null,
      "the revocation feed's id sequence (sqlite_sequence) is Inf",
    ],
    [
      "a text SQLite reads as the last id",
      "'+9223372036854775807'",
      null,
      "the revocation feed's id sequence (sqlite_sequence) is +9223372036854775807",
    ],
    [
      "a negative sequence beside a row at the last id",
      "-9223372036854775808",
      "9223372036854775807",
      "the revocation feed's largest id is 9223372036854775807",
    ],
  ])(
    "a sequence written as %s is named as what spends the ids (probe 58f F1, F2)",
    async (_label, sequence, planted, named) => {
      current = buildTestApp();
      const admin = await signUp(current, { role: "admin" });
      const { record } = createKey(current, ["chat"], admin.userId);
      const sqlite = current.db.$client;
      if (planted !== null) {
        sqlite.run(
          `INSERT INTO auth_revocations (id, kind, subject, created_at) VALUES (${planted}, 'key', 'planted', 0)`,
        );
      }
      sqlite.run("DELETE FROM sqlite_sequence WHERE name = 'auth_revocations'");
      sqlite.run(
        `INSERT INTO sqlite_sequence (name, seq) VALUES ('auth_revocations', ${sequence})`,
      );
      const refused = await send(current, `/api/admin/api-keys/${record.id}`, {
        method: "DELETE",
        headers: bearer(admin.accessToken),
      });
      expect(refused.status).toBe(500);
      expect(current.logs.text).toContain(`${named}, past any id Palisade writes`);
      expect(keyRows(current).find((row) => row.id === record.id)?.revokedAt).toBeNull();
    },
  );

  test("bun run cli users:role fails in one line, and the role stays (probe 58c F2)", async () => {
    current = buildTestApp();
    const user = await signUp(current);
    const { key } = createKey(current, ["chat"], user.userId);
    breakFeed(current);
    // A process of its own: what its logger writes goes to the same stderr.
    const failed = await runToExit(
      ["bun", "run", "src/cli/index.ts", "users:role", "--email", user.email, "--role", "admin"],
      { DATABASE_PATH: current.databasePath },
    );
    expect(failed.code).toBe(1);
    expect(failed.stderr.trimEnd().split("\n")).toEqual([
      expect.stringMatching(/^palisade users:role: failed: \w*Error: .+$/),
    ]);
    const role = current.db.$client.query("SELECT role FROM users WHERE id = ?").get(user.userId);
    expect(role).toEqual({ role: "user" });
    expect((await useKey(current, key)).status).toBe(200);
  });
});
