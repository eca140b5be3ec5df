/**
 * API_KEYS is the truth for bootstrap keys at every start: restarts on one database file add,
 * re-scope and revoke to match it (audited), and an API_KEYS that could not work is a one-line
 * refusal naming the variable, from `config:check` as from the start.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../../../src/config";
import { generateApiKey } from "../../../src/plugins/auth/api-key-format";
import type { Scope } from "../../../src/plugins/auth/principal";
import { PRODUCTION_ENV, send, TEST_CSRF_SECRET, TEST_JWT_SECRET } from "../../support/app";
import { bearer } from "../../support/auth";
import { cleanupsAfterEach, tempDatabaseFile } from "../../support/cleanups";
import { ManualClock } from "../../support/clock";
import { runToExit } from "../../support/process";
import { startOn } from "../../support/restart";

const cleanups = cleanupsAfterEach();

const databaseFile = () => tempDatabaseFile(cleanups);

function start(path: string, apiKeys: string, clock?: ManualClock) {
  const started = startOn(path, { API_KEYS: apiKeys }, clock);
  cleanups.push(started.close);
  return started;
}

type Target = { app: { handle(request: Request): Promise<Response> } };

async function powers(target: Target, key: string) {
  const me = await send(target, "/api/auth/me", { headers: { "x-api-key": key } });
  const scopes = me.status === 200 ? ((await me.json()) as { scopes: Scope[] }).scopes : null;
  const admin = (await send(target, "/api/admin/api-keys", { headers: bearer(key) })).status;
  return { me: me.status, scopes, admin };
}

function auditRows(target: ReturnType<typeof startOn>, types: string[]) {
  return target.db.$client
    .query(
      `SELECT type, actor, detail FROM audit_events WHERE type IN (${types.map(() => "?").join(",")}) ORDER BY id`,
    )
    .all(...types)
    .map((row) => {
      const { type, actor, detail } = row as { type: string; actor: string; detail: string };
      return { type, actor, detail: JSON.parse(detail) as Record<string, string> };
    });
}

describe("bootstrap keys follow API_KEYS across restarts", () => {
  test("added, re-scoped, removed: each start matches the variable, audited", async () => {
    const path = databaseFile();
    const k1 = generateApiKey("live");
    const k2 = generateApiKey("live");

    const first = start(path, `${k1}:admin+chat,${k2}`);
    expect(await powers(first, k1)).toEqual({ me: 200, scopes: ["admin", "chat"], admin: 200 });
    expect(await powers(first, k2)).toEqual({ me: 200, scopes: ["chat", "payments"], admin: 403 });
    first.close();

    // Fewer scopes for k1, k2 removed.
    const second = start(path, `${k1}:chat`);
    expect(await powers(second, k1)).toEqual({ me: 200, scopes: ["chat"], admin: 403 });
    expect((await powers(second, k2)).me).toBe(401);
    const events = auditRows(second, ["admin.key.scopes_changed", "admin.key.revoked"]);
    expect(events).toEqual([
      {
        type: "admin.key.scopes_changed",
        actor: "system",
        detail: expect.objectContaining({
          from: "admin,chat",
          to: "chat",
          reason: "api_keys_changed",
        }),
      },
      {
        type: "admin.key.revoked",
        actor: "system",
        detail: expect.objectContaining({ reason: "removed_from_api_keys" }),
      },
    ]);
    expect(JSON.stringify(events)).not.toContain(k1);
    second.close();

    // A revoked bootstrap key listed again stays revoked, with a warning.
    const third = start(path, `${k1}:chat,${k2}`);
    expect((await powers(third, k2)).me).toBe(401);
    expect(third.logs.text).toContain("they stay revoked");
    expect(third.logs.text).not.toContain(k2);
    third.close();

    // API_KEYS emptied: no bootstrap key is left.
    const fourth = start(path, "");
    expect((await powers(fourth, k1)).me).toBe(401);
    const active = fourth.db.$client
      .query("SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL")
      .get();
    expect(active).toEqual({ n: 0 });
  });

  test("a process still running sees a restart's narrowing within a second", async () => {
    const path = databaseFile();
    const clock = new ManualClock();
    const k1 = generateApiKey("live");
    const running = start(path, `${k1}:admin`, clock);
    expect((await powers(running, k1)).admin).toBe(200); // cached in this process
    start(path, `${k1}:chat`, clock); // the next process, started with the new value
    clock.advance(1_100);
    expect(await powers(running, k1)).toEqual({ me: 200, scopes: ["chat"], admin: 403 });
  });

  test("processes starting together on one file store each bootstrap key once", async () => {
    const path = databaseFile();
    start(path, "").close(); // migrated, as after the first deployment
    const keys = [generateApiKey("live"), generateApiKey("live"), generateApiKey("live")];
    const env = { DATABASE_PATH: path, API_KEYS: `${keys[0]}:admin,${keys[1]},${keys[2]}:chat` };
    const runs = await Promise.all(
      Array.from({ length: 4 }, () =>
        runToExit(["bun", "run", "src/cli/index.ts", "keys:list"], env),
      ),
    );
    expect(runs.map((run) => run.code)).toEqual([0, 0, 0, 0]);
    expect(runs.map((run) => run.stderr)).toEqual(["", "", "", ""]);
    const after = start(path, env.API_KEYS);
    const rows = after.db.$client
      .query(
        "SELECT scopes FROM api_keys WHERE origin = 'bootstrap' AND revoked_at IS NULL ORDER BY name",
      )
      .all();
    expect(rows).toEqual([
      { scopes: '["admin"]' },
      { scopes: '["chat","payments"]' },
      { scopes: '["chat"]' },
    ]);
    expect(auditRows(after, ["admin.key.created"])).toHaveLength(3);
  }, 30_000);

  test("an entry that is already a key made through the API or CLI is refused, naming API_KEYS", () => {
    const path = databaseFile();
    const first = start(path, "");
    const made = first.services.apiKeys.create({ name: "k", scopes: ["chat"], userId: null }, "t");
    first.close();
    let error: unknown;
    try {
      start(path, made.key);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).variable).toBe("API_KEYS");
    expect((error as ConfigError).message).not.toContain(made.key);
  });

  test("a key whose origin was changed to bootstrap in the file is refused, not revoked as an API_KEYS entry it never was (probe 36b F4)", async () => {
    const path = databaseFile();
    const listed = generateApiKey("live");
    const first = start(path, `${listed}:admin`);
    const made = await send(first, "/api/admin/api-keys", {
      headers: bearer(listed),
      body: { name: "ownerless", scopes: ["chat"] },
    });
    const { key, apiKey } = (await made.json()) as { key: string; apiKey: { id: string } };
    expect((await powers(first, key)).me).toBe(200);
    first.db.$client.run("UPDATE api_keys SET origin = 'bootstrap' WHERE id = ?", [apiKey.id]);
    first.close();
    const again = start(path, `${listed}:admin`);
    expect((await powers(again, key)).me).toBe(401);
    again.services.audit.flush();
    expect(auditRows(again, ["admin.key.revoked"])).toEqual([]);
    expect(
      again.db.$client.query("SELECT revoked_at FROM api_keys WHERE id = ?").get(apiKey.id),
    ).toEqual({ revoked_at: null });
    const reported = auditRows(again, ["auth.credential_tampered"]);
    expect(reported.map((row) => row.detail.table)).toContain("api_keys");
  });

  test("a bootstrap row whose origin was changed in the file stops no start: the key is refused and reported (probe 19d)", async () => {
    const path = databaseFile();
    const key = generateApiKey("live");
    const other = generateApiKey("live");
    const first = start(path, `${key}:chat,${other}:chat`);
    expect((await powers(first, key)).me).toBe(200);
    first.db.$client.run("UPDATE api_keys SET origin = 'api' WHERE name = 'bootstrap-1'");
    first.close();
    const again = start(path, `${key}:chat,${other}:chat`);
    expect((await powers(again, key)).me).toBe(401);
    expect((await powers(again, other)).me).toBe(200);
    again.services.audit.flush();
    const reported = auditRows(again, ["auth.credential_tampered"]);
    expect(reported.map((row) => row.detail.table)).toContain("api_keys");
    // Nothing was added for it: the tampered row still holds its prefix.
    expect(again.db.$client.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({ n: 2 });
  });
});

/**
 * A pal_ key of another body with the same first 16 characters: its checksum made as the key
 * format makes it (a base62 CRC-32 of what comes before it, six characters).
 */
function palTwin(key: string): string {
  const body = `${key.slice(0, 16)}${"Q".repeat(23)}`;
  const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  let n = Bun.hash.crc32(body);
  let checksum = "";
  for (let i = 0; i < 6; i++) {
    checksum = base62[n % 62] + checksum;
    n = Math.floor(n / 62);
  }
  return `${body}${checksum}`;
}

describe("an API_KEYS that cannot work is refused in one line", () => {
  const key = generateApiKey("live");
  const longKey = "a-long-bootstrap-key-0123456789-abcdef";
  const twin = palTwin(key);
  const badChecksum = `${key.slice(0, -1)}${key.endsWith("A") ? "B" : "A"}`;
  test.each([
    ["the same key twice", `${key},${key}:chat`, {}, "share their first 16 characters"],
    [
      "a key of no pal_ shape twice",
      `${longKey},${longKey}:chat`,
      {},
      "entries 1 and 2 are one key",
    ],
    [
      "two pal_ keys sharing their first 16 characters",
      `${key},${twin}`,
      {},
      "entries 1 and 2 share",
    ],
    ["an unknown scope", `${longKey}:chat+root`, {}, "names a scope that is not one of"],
    ["an empty scope list", `${longKey}:`, {}, "names a scope that is not one of"],
    ["a key under 16 characters", "short-key", {}, "shorter than 16 characters"],
    ["a pal_ key with a wrong checksum", badChecksum, {}, "checksum is wrong"],
    // Keys no client could send, or not the one meant (probe 36b F2).
    ["spaces around a key", `${longKey} :chat`, {}, "entry 1 has spaces around its key"],
    ["a second colon", `${longKey}:admin:chat`, {}, "entry 1 has more than one ':'"],
    // Invisible at an end, or sent differently by each client (probe 37a F2): refused as any
    // secret holding an invisible character is (probe 72b F8).
    [
      "a zero-width space after a key",
      `${longKey}\u200b:chat`,
      {},
      "holds a control or invisible character (U+200B)",
    ],
    [
      "a soft hyphen before a key",
      `\u00ad${longKey}`,
      {},
      "holds a control or invisible character (U+00AD)",
    ],
    [
      "a no-break space inside a key",
      `a-long\u00a0bootstrap-key-0123456789`,
      {},
      "outside printable",
    ],
    ["a pal_ key a character too long", `${key}x`, {}, "not a whole pal_ key"],
    ["a pal_ key a character short", key.slice(0, -1), {}, "not a whole pal_ key"],
    ["a pal_test_ key in production", generateApiKey("test"), PRODUCTION_ENV, "pal_test_"],
  ])("%s", (_name, apiKeys, env, reason) => {
    let error: unknown;
    try {
      loadConfig({ ...env, API_KEYS: apiKeys });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const refusal = error as ConfigError;
    expect(refusal.variable).toBe("API_KEYS");
    expect(refusal.message).toContain(reason);
    expect(refusal.message.split("\n")).toHaveLength(1);
    for (const entry of apiKeys.split(","))
      expect(refusal.message).not.toContain(entry.split(":")[0]);
  });

  test("config:check and the start both refuse a collision: one line, exit 2", async () => {
    const path = databaseFile();
    const env = { DATABASE_PATH: path, API_KEYS: `${key},${twin}`, PORT: "0" };
    const check = await runToExit(["bun", "run", "src/cli/index.ts", "config:check"], env);
    expect(check.code).toBe(2);
    expect(check.stderr.trim().split("\n")).toHaveLength(1);
    expect(check.stderr).toContain("API_KEYS entries 1 and 2 share their first 16 characters");
    const started = await runToExit(["bun", "run", "src/index.ts"], env);
    expect(started.code).toBe(2);
    expect(started.stderr.trim()).toStartWith(
      "palisade: refusing to start: API_KEYS entries 1 and 2",
    );
    expect(started.stderr.trim().split("\n")).toHaveLength(1);
    expect(started.stderr).not.toContain(key);
  });

  test("keys of no pal_ shape sharing their first 16 characters are two keys: each is found by its hash", async () => {
    const other = `${longKey.slice(0, 16)}${"y".repeat(24)}`;
    const started = start(databaseFile(), `${longKey}:chat,${other}:admin`);
    expect(await powers(started, longKey)).toEqual({ me: 200, scopes: ["chat"], admin: 403 });
    expect(await powers(started, other)).toEqual({ me: 200, scopes: ["admin"], admin: 200 });
  });
});

describe("a bootstrap key of no pal_ shape is stored without any of its characters (probe 82a F1)", () => {
  // What `openssl rand -hex 16` gives, which production accepts.
  const hexKey = () => Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
  const pieces = (key: string) => [0, 8, 16, 24].map((at) => key.slice(at, at + 8));

  test("its lookup prefix is read from its hash: neither the file nor an admin's list holds its first characters", async () => {
    const key = hexKey();
    const started = start(databaseFile(), `${key}:admin`);
    expect(await powers(started, key)).toEqual({ me: 200, scopes: ["admin"], admin: 200 });
    const stored = started.db.$client.query("SELECT prefix, secret_hash FROM api_keys").all() as {
      prefix: string;
      secret_hash: string;
    }[];
    expect(stored).toEqual([
      { prefix: `sha256:${stored[0]!.secret_hash.slice(0, 9)}`, secret_hash: expect.any(String) },
    ]);
    const listed = await (
      await send(started, "/api/admin/api-keys", { headers: bearer(key) })
    ).text();
    expect(listed).toContain(`"prefix":"sha256:`);
    for (const piece of pieces(key)) expect(listed).not.toContain(piece);
    // A pal_ key keeps its first 16 characters as its prefix (7 of its 36 random ones).
    const pal = generateApiKey("live");
    const path = started.db.$client.filename;
    started.close();
    const again = start(path, `${key}:admin,${pal}`);
    const palRow = again.db.$client
      .query("SELECT prefix FROM api_keys WHERE name = 'bootstrap-2'")
      .get() as { prefix: string };
    expect(palRow.prefix).toBe(pal.slice(0, 16));
    expect((await powers(again, pal)).me).toBe(200);
  });

  test("a row stored with its first 16 characters in clear, as before, gets its hashed prefix at the next start, sealed, and the key still works", async () => {
    const key = hexKey();
    const path = databaseFile();
    const first = start(path, `${key}:admin`);
    // The row as the release before wrote it: its first 16 characters, sealed with them.
    const row = first.db.$client
      .query(
        "SELECT id, prefix, secret_hash AS secretHash, scopes, user_id AS userId, expires_at AS expiresAt, revoked_at AS revokedAt, origin FROM api_keys",
      )
      .get() as Parameters<typeof first.services.credentialSeal.apiKey>[0];
    const before = { ...row, prefix: key.slice(0, 16) };
    first.db.$client.run("UPDATE api_keys SET prefix = ?, seal = ? WHERE id = ?", [
      before.prefix,
      first.services.credentialSeal.apiKey(before),
      row.id,
    ]);
    first.close();

    const again = start(path, `${key}:admin`);
    const after = again.db.$client.query("SELECT prefix FROM api_keys").get() as {
      prefix: string;
    };
    expect(after.prefix).toBe(`sha256:${row.secretHash.slice(0, 9)}`);
    expect(await powers(again, key)).toEqual({ me: 200, scopes: ["admin"], admin: 200 });
    const listed = (await (
      await send(again, "/api/admin/api-keys", { headers: bearer(key) })
    ).json()) as { keys: { prefix: string; tampered: boolean }[] };
    expect(listed.keys).toEqual([
      expect.objectContaining({ prefix: after.prefix, tampered: false }),
    ]);
    expect(again.logs.text).toContain("found by their hash");
  });

  test("two rows of one hash written into the file stop no start: one gets the hashed prefix, the other is left as it is", async () => {
    const key = hexKey();
    const path = databaseFile();
    const first = start(path, `${key}:chat`);
    first.db.$client.run(
      `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, expires_at, revoked_at, origin, seal)
       SELECT 'copy', name, ?, secret_hash, scopes, user_id, created_at, expires_at, revoked_at, origin, seal FROM api_keys`,
      [key.slice(0, 16)],
    );
    first.close();
    const again = start(path, `${key}:chat`);
    const prefixes = again.db.$client
      .query("SELECT id, prefix FROM api_keys ORDER BY id = 'copy'")
      .all() as { id: string; prefix: string }[];
    expect(prefixes.map((row) => row.prefix)).toEqual([
      expect.stringMatching(/^sha256:[0-9a-f]{9}$/),
      key.slice(0, 16),
    ]);
    expect((await powers(again, key)).me).toBe(200);
  });
});

test("a start whose API_KEYS change meets an id sequence written into the file refuses in one line, exit 2, and changes nothing (probe 58c F2)", async () => {
  const path = databaseFile();
  const key = generateApiKey("live");
  start(path, `${key}:chat+admin`).close();
  const written = new Database(path);
  written.run("DELETE FROM sqlite_sequence WHERE name = 'auth_revocations'");
  written.run(
    "INSERT INTO sqlite_sequence (name, seq) VALUES ('auth_revocations', 9223372036854775807)",
  );
  written.close();
  const started = await runToExit(["bun", "run", "src/index.ts"], {
    DATABASE_PATH: path,
    PORT: "0",
    API_KEYS: `${key}:chat`,
    JWT_SECRET_KEY: TEST_JWT_SECRET,
    CSRF_SECRET_KEY: TEST_CSRF_SECRET,
  });
  const lines = started.stderr.trim().split("\n");
  expect([started.code, lines]).toEqual([2, [expect.any(String)]]);
  expect(lines[0]).toStartWith(`palisade: refusing to start: ${path}: IdSequenceError: `);
  expect(lines[0]).toContain(
    "the revocation feed's id sequence (sqlite_sequence) is 9223372036854775807",
  );
  const read = new Database(path, { readonly: true });
  expect(read.query("SELECT scopes FROM api_keys WHERE origin = 'bootstrap'").all()).toEqual([
    { scopes: '["chat","admin"]' },
  ]);
  read.close();
});
