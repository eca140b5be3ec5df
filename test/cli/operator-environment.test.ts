/**
 * A CLI command run from a shell whose environment is not the service's. Only a start applies
 * API_KEYS: a listing command run without it must not revoke the bootstrap keys (a revoked bootstrap
 * key stays revoked). And a process whose AUDIT_SECRET_KEY is not the one the audit log is written
 * with stops before it writes a row no one could verify past: the CLI, a start.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { ConfigError } from "../../src/config";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { servedProfileOf } from "../../src/db/served-profile";
import { createLogger } from "../../src/logging/logger";
import { AuditKeys } from "../../src/plugins/audit/chain";
import { refuseKeyBesideKeyedLog } from "../../src/plugins/audit/key-file-look";
import { NEW_LOG_KEYED } from "../../src/plugins/audit/key-match";
import { generateApiKey } from "../../src/plugins/auth/api-key-format";
import { pinNewAuditLog } from "../../src/upgrade-sealing";
import { LogCapture, PRODUCTION_ENV, send } from "../support/app";
import { cleanupsAfterEach, tempDatabaseFile } from "../support/cleanups";
import { cliInProcess } from "../support/cli";
import { heldLocked, madeByAnotherProcess } from "../support/held-lock";
import { runToExit, startService } from "../support/process";
import { startOn } from "../support/restart";

const cleanups = cleanupsAfterEach();

const databaseFile = () => tempDatabaseFile(cleanups);

const AUDIT_KEY = "audit-key-of-the-service-0123456789abcdefghij";
const OTHER_AUDIT_KEY = "another-audit-key-0123456789abcdefghijklmnopq";

/** A service with AUDIT_KEY that has written an audit row, stopped. */
function writeAuditRowAndStop(path: string): void {
  const service = startOn(path, { AUDIT_SECRET_KEY: AUDIT_KEY });
  service.services.audit.record({
    type: "admin.blocks.listed",
    outcome: "success",
    actor: "system",
  });
  service.services.audit.flush();
  service.close();
}

async function meStatus(target: ReturnType<typeof startOn>, key: string) {
  return (await send(target, "/api/auth/me", { headers: { "x-api-key": key } })).status;
}

function rows(path: string, sql: string): unknown[] {
  const file = new Database(path, { readonly: true });
  try {
    return file.query(sql).all();
  } finally {
    file.close();
  }
}

test("listing commands run without API_KEYS leave the bootstrap keys as the start made them", async () => {
  const path = databaseFile();
  const key = generateApiKey("live");
  const service = startOn(path, { API_KEYS: `${key}:admin` });
  cleanups.push(service.close);
  expect(await meStatus(service, key)).toBe(200);

  for (const command of ["keys:list", "blocks:list", "audit:tail"]) {
    const result = await cliInProcess([command], { DATABASE_PATH: path });
    expect({ command, code: result.code }).toEqual({ command, code: 0 });
  }
  expect(rows(path, "SELECT revoked_at FROM api_keys")).toEqual([{ revoked_at: null }]);
  expect(rows(path, "SELECT type FROM audit_events WHERE type = 'admin.key.revoked'")).toEqual([]);
  // The running service and the next start with API_KEYS both still take the key.
  expect(await meStatus(service, key)).toBe(200);
  service.close();
  const again = startOn(path, { API_KEYS: `${key}:admin` });
  cleanups.push(again.close);
  expect(await meStatus(again, key)).toBe(200);
});

test("a command without the service's AUDIT_SECRET_KEY stops in one line and writes nothing", async () => {
  const path = databaseFile();
  writeAuditRowAndStop(path);
  const before = rows(path, "SELECT count(*) AS n FROM audit_events");

  // Another key, and none at all: development made DATABASE_PATH.audit-key and used it, which was
  // not the log's key, and left there it was read by every later command and development start
  // (probe 92g F3). Now nothing is made beside a keyed log, and the line says what to set.
  for (const [env, said] of [
    [
      { AUDIT_SECRET_KEY: OTHER_AUDIT_KEY },
      "is not the key this database's audit log is written with",
    ],
    [{}, `is not set, and no development key file is beside the database (${path}.audit-key)`],
  ] as const) {
    const result = await cliInProcess(["keys:list"], { DATABASE_PATH: path, ...env });
    expect(result.code).toBe(2);
    const lines = result.stderr.split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toStartWith(`palisade keys:list: AUDIT_SECRET_KEY ${said}`);
    expect(lines[0]).not.toContain(OTHER_AUDIT_KEY);
    expect(rows(path, "SELECT count(*) AS n FROM audit_events")).toEqual(before);
  }
  expect(existsSync(`${path}.audit-key`)).toBe(false);

  // With the service's key the command runs, and the chain still verifies.
  const listed = await cliInProcess(["keys:list"], {
    DATABASE_PATH: path,
    AUDIT_SECRET_KEY: AUDIT_KEY,
  });
  expect(listed.code).toBe(0);
  const verified = await cliInProcess(["audit:verify"], {
    DATABASE_PATH: path,
    AUDIT_SECRET_KEY: AUDIT_KEY,
  });
  expect(verified.code).toBe(0);
});

test("a keyed log without its key file behind a journal a look cannot apply, and a development start on it: refused, no key made beside it (probe 93a F3)", async () => {
  const path = databaseFile();
  writeAuditRowAndStop(path);
  // A journal left beside it (a crash, or written there): the read-only look cannot read past it.
  writeFileSync(`${path}-journal`, Buffer.alloc(600, 7));
  const result = await cliInProcess(["users:list"], { DATABASE_PATH: path });
  expect(result.code).toBe(2);
  expect(result.stderr).toStartWith(
    `palisade users:list: AUDIT_SECRET_KEY is not set, and no development key file is beside the database (${path}.audit-key) and the file cannot be read here to tell whether its audit log is keyed`,
  );
  expect(existsSync(`${path}.audit-key`)).toBe(false);
  rmSync(`${path}-journal`);
  // A development start: the same line, where it made a key and said to restore the file.
  const start = await runToExit(["bun", "run", "src/index.ts"], {
    DATABASE_PATH: path,
    APP_ENV: "development",
    PORT: "0",
  });
  expect(start.code).not.toBe(0);
  expect(start.stderr).toContain(
    `refusing to start: AUDIT_SECRET_KEY is not set, and no development key file is beside the database (${path}.audit-key) while its audit log is keyed`,
  );
  expect(existsSync(`${path}.audit-key`)).toBe(false);
  // With the key, both go on; a new file's first start makes its key as before.
  expect(
    (await cliInProcess(["users:list"], { DATABASE_PATH: path, AUDIT_SECRET_KEY: AUDIT_KEY })).code,
  ).toBe(0);
  const fresh = databaseFile();
  const made = await cliInProcess(["users:list"], { DATABASE_PATH: fresh });
  expect(made.code).toBe(1);
  const first = await startService({ DATABASE_PATH: fresh, APP_ENV: "development" });
  await first.stop();
  expect(existsSync(`${fresh}.audit-key`)).toBe(true);
  expect((await cliInProcess(["users:list"], { DATABASE_PATH: fresh })).code).toBe(0);
}, 30_000);

test("the looks before a command or a start wait for a file locked for a moment, as their own connection does: its audit log is not taken for unreadable, nor its served profile for none, and nothing is left beside it", async () => {
  const path = databaseFile();
  madeByAnotherProcess(
    path,
    `require("./src/db/served-profile").recordServedProfile(sqlite, "production", Date.now());`,
  );
  // Looked at while another process holds it: a development key may be made beside it (its log
  // holds no keyed row), and it was served with production.
  // And nothing is left beside it: a look that waited on one connection read it, once the holder
  // had removed its WAL, through a new -shm and -wal it could not remove (probe 97b F1).
  const besideIt = () => [`${path}-wal`, `${path}-shm`].filter((side) => existsSync(side));
  let held = await heldLocked(path, 800);
  refuseKeyBesideKeyedLog(path, `${path}.audit-key`);
  let answeredAt = Date.now();
  expect(answeredAt).toBeGreaterThanOrEqual(await held.releasedAt());
  expect(besideIt()).toEqual([]);
  held = await heldLocked(path, 800);
  expect(servedProfileOf(path)).toBe("production");
  answeredAt = Date.now();
  expect(answeredAt).toBeGreaterThanOrEqual(await held.releasedAt());
  expect(besideIt()).toEqual([]);
});

test("a start with another AUDIT_SECRET_KEY is refused, naming the variable", () => {
  const path = databaseFile();
  writeAuditRowAndStop(path);
  let refused: unknown = null;
  try {
    startOn(path, { AUDIT_SECRET_KEY: OTHER_AUDIT_KEY }).close();
  } catch (error) {
    refused = error;
  }
  expect(refused).toBeInstanceOf(ConfigError);
  expect((refused as ConfigError).variable).toBe("AUDIT_SECRET_KEY");
  // The same key starts as before.
  const again = startOn(path, { AUDIT_SECRET_KEY: AUDIT_KEY });
  again.close();
});

test("a row written into the file with another key's id does not stop the service that has the key", () => {
  const path = databaseFile();
  writeAuditRowAndStop(path);
  const file = new Database(path);
  file.run(
    "INSERT INTO audit_events (at, type, outcome, detail, subject_commit, hash, prev_hash, key_id) SELECT at, type, outcome, detail, subject_commit, hash, hash, 'forged00forged00' FROM audit_events ORDER BY id DESC LIMIT 1",
  );
  file.close();
  const again = startOn(path, { AUDIT_SECRET_KEY: AUDIT_KEY });
  again.close();
  // A key that wrote nothing to it is still refused.
  expect(() => startOn(path, { AUDIT_SECRET_KEY: OTHER_AUDIT_KEY })).toThrow(ConfigError);
});

test("on a new database the first start records its key, so a command without it is refused there too", async () => {
  const path = databaseFile();
  const service = await startService({ DATABASE_PATH: path, AUDIT_SECRET_KEY: AUDIT_KEY });
  await service.stop();
  // The key, then each sealing migration it applied, with nothing to seal (said nowhere, recorded
  // so that a file put back before one of them later is seen sealed twice).
  expect(rows(path, "SELECT type, detail FROM audit_events")).toEqual([
    { type: "audit.chain.keyed", detail: '{"rows":0}' },
    { type: "auth.credentials_sealed", detail: '{"accounts":0,"keys":0,"sessions":0}' },
    { type: "whatsapp.outbox_sealed", detail: '{"givenUp":0,"rows":0}' },
    { type: "chat.history_sealed", detail: '{"conversations":0,"messages":0}' },
    { type: "payment.ledger_sealed", detail: '{"idempotencyKeys":0,"payments":0}' },
    { type: "ip.blocks_sealed", detail: '{"blocks":0}' },
    { type: "auth.lineages_sealed", detail: '{"keys":0,"rotated":0}' },
    { type: "auth.successors_sealed", detail: '{"actingForUsers":0,"keys":0,"rotated":0}' },
    { type: "payment.undecided_sealed", detail: '{"payments":0}' },
    { type: "whatsapp.outbox_offsets_sealed", detail: '{"replies":0}' },
  ]);
  const created = await cliInProcess(
    ["users:create", "--email", "root@example.test", "--role", "admin", "--password-stdin"],
    { DATABASE_PATH: path },
    "Str0ng-Passw0rd-For-Admin-77!",
  );
  expect(created.code).toBe(2);
  expect(created.stderr).toStartWith("palisade users:create: AUDIT_SECRET_KEY is not set");
  expect(rows(path, "SELECT count(*) AS n FROM users")).toEqual([{ n: 0 }]);
  expect(existsSync(`${path}.audit-key`)).toBe(false);
  // A second start adds nothing: the log is no longer empty.
  const again = await startService({ DATABASE_PATH: path, AUDIT_SECRET_KEY: AUDIT_KEY });
  await again.stop();
  expect(rows(path, "SELECT count(*) AS n FROM audit_events")).toEqual([{ n: 10 }]);
});

test("pinNewAuditLog writes the first row of an empty log only", () => {
  const path = databaseFile();
  // Migrated by a command (no row written), as `db:migrate` leaves a new file.
  const migrated = startOn(path, { AUDIT_SECRET_KEY: AUDIT_KEY });
  migrated.db.$client.run("DELETE FROM audit_events");
  const logger = createLogger({ level: "info", destination: new LogCapture() });
  const keys = new AuditKeys(AUDIT_KEY);
  pinNewAuditLog(migrated.db.$client, keys, logger, NEW_LOG_KEYED);
  pinNewAuditLog(migrated.db.$client, keys, logger, NEW_LOG_KEYED);
  migrated.close();
  expect(rows(path, "SELECT type, actor, detail FROM audit_events")).toEqual([
    { type: "audit.chain.keyed", actor: "system", detail: '{"rows":0}' },
  ]);
});

test("with API_KEYS, a new file's first row is still the start's key: on a file a command migrated, and on one the start migrates (probe 79b F2)", async () => {
  const key = generateApiKey("live");
  const env = { AUDIT_SECRET_KEY: AUDIT_KEY, API_KEYS: `${key}:admin` };
  const migratedFirst = databaseFile();
  // Migrated by an earlier run, nothing written to its log.
  const migrated = openDatabase(migratedFirst);
  applyMigrations(migrated);
  migrated.$client.close();
  expect(rows(migratedFirst, "SELECT count(*) AS n FROM audit_events")).toEqual([{ n: 0 }]);
  for (const path of [migratedFirst, databaseFile()]) {
    const service = await startService({ ...env, DATABASE_PATH: path });
    await service.stop();
    const types = rows(path, "SELECT type FROM audit_events ORDER BY id") as { type: string }[];
    expect(types[0]).toEqual({ type: "audit.chain.keyed" });
    expect(types.map(({ type }) => type)).toContain("admin.key.created");
  }
});

test("processes starting together on a new file record its sealings once, none of them late (probe 79b F1)", async () => {
  const path = databaseFile();
  const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY: AUDIT_KEY };
  const services = await Promise.all([startService(env), startService(env), startService(env)]);
  for (const service of services) await service.stop();
  for (const service of services) {
    expect(service.stdout()).not.toContain("holds no event of the sealings");
  }
  expect(
    rows(
      path,
      "SELECT type, count(*) AS n FROM audit_events WHERE type LIKE '%sealed' GROUP BY type HAVING n > 1 OR max(detail LIKE '%recordedLate%') = 1",
    ),
  ).toEqual([]);
  expect(
    rows(path, "SELECT count(*) AS n FROM audit_events WHERE type = 'audit.chain.keyed'"),
  ).toEqual([{ n: 1 }]);
  expect(rows(path, "SELECT count(*) AS n FROM audit_events WHERE type LIKE '%sealed'")).toEqual([
    { n: 9 },
  ]);
});

test("a command run without APP_ENV on a file a production service served: one that makes something is refused, one that reads says so, and APP_ENV decides (probe 86d F3)", async () => {
  const path = databaseFile();
  const service = await startService({ ...PRODUCTION_ENV, DATABASE_PATH: path });
  await service.stop();
  expect(rows(path, "SELECT profile FROM served_profile")).toEqual([{ profile: "production" }]);
  const markedByStart =
    rows(path, "SELECT name FROM sqlite_master WHERE name LIKE 'users_readings_%'").length > 0;
  // The service's secrets exported, its APP_ENV not: the development profile would take an
  // eight-character admin password here.
  const { APP_ENV: _profile, ...secrets } = PRODUCTION_ENV;
  const shell = { ...secrets, DATABASE_PATH: path };
  const made = await cliInProcess(
    ["users:create", "--email", "root@example.test", "--role", "admin", "--password-stdin"],
    shell,
    "hunter22",
  );
  expect(made.code).toBe(1);
  expect(made.stderr).toBe(
    `palisade users:create: DATABASE_PATH ${path} was last served with APP_ENV=production and no APP_ENV is set here: users:create would apply the development profile's rules to it; set APP_ENV=production (APP_ENV=development applies them anyway, with the service's AUDIT_SECRET_KEY)`,
  );
  expect(rows(path, "SELECT count(*) AS n FROM users")).toEqual([{ n: 0 }]);
  // Nothing made beside it either: no development audit key.
  expect(existsSync(`${path}.audit-key`)).toBe(false);
  const listed = await cliInProcess(["users:list"], shell);
  expect(listed.code).toBe(0);
  expect(listed.stderr).toContain(
    `warning: DATABASE_PATH ${path} was last served with APP_ENV=production and no APP_ENV is set here: users:list reads it with the development profile; set APP_ENV=production`,
  );
  // Without the service's secrets either, a reading command makes no development key beside the
  // file (probe 92c F4: made, it failed every later command and start on the key mismatch).
  // Nor does it read the log with a key made for the run, which called every row changed (92e F4).
  for (const command of ["users:list", "audit:tail"]) {
    const bare = await cliInProcess([command], { DATABASE_PATH: path });
    expect({ command, code: bare.code }).toEqual({ command, code: 1 });
    expect(bare.stderr).toEndWith(
      `palisade ${command}: DATABASE_PATH ${path} was last served with APP_ENV=production, whose audit log is keyed with AUDIT_SECRET_KEY, which is not set here: set APP_ENV=production and the service's secrets`,
    );
    expect(bare.stdout).toBe("");
  }
  expect(existsSync(`${path}.audit-key`)).toBe(false);
  // Nor with APP_ENV=development named, nor with a development key file left beside it (92f F2:
  // one made there by the first, it was read as the key and every row called changed).
  const named = await cliInProcess(["audit:tail"], { DATABASE_PATH: path, APP_ENV: "development" });
  expect(named.code).toBe(1);
  expect(existsSync(`${path}.audit-key`)).toBe(false);
  writeFileSync(`${path}.audit-key`, "a-development-key-left-beside-it-0123456789\n", {
    mode: 0o600,
  });
  const leftover = await cliInProcess(["audit:tail"], { DATABASE_PATH: path });
  expect(leftover.code).toBe(1);
  expect(leftover.stdout).toBe("");
  rmSync(`${path}.audit-key`);
  // Named, the profile's own rules apply: production refuses that password, development takes it.
  const production = await cliInProcess(
    ["users:create", "--email", "root@example.test", "--role", "admin", "--password-stdin"],
    { ...shell, APP_ENV: "production" },
    "hunter22",
  );
  expect(production.code).toBe(1);
  expect(production.stderr).toContain("the password is refused");
  const development = await cliInProcess(
    ["users:create", "--email", "dev@example.test", "--password-stdin"],
    { ...shell, APP_ENV: "development" },
    "violet-Harbor-quantum-73!",
  );
  // A service stopped before it looked at the accounts' readings (a tenth of a second after it
  // listened) left the file unmarked: the command marks it, and says so (a release before the
  // mark serving it would stop; probe 96a F3). Marked by the start, nothing is said.
  expect({ code: development.code, stderr: development.stderr }).toEqual({
    code: 0,
    stderr: markedByStart
      ? ""
      : "the file is now marked as served by this release's readings (look-alike addresses): a process of a release before the mark serving it stops at its next check, saying an index on users is not one of its migrations'",
  });
  // A development start records its own profile: the commands go on unsaid.
  const again = await startService({
    APP_ENV: "development",
    AUDIT_SECRET_KEY: PRODUCTION_ENV.AUDIT_SECRET_KEY,
    DATABASE_PATH: path,
  });
  await again.stop();
  expect(rows(path, "SELECT profile FROM served_profile")).toEqual([{ profile: "development" }]);
  const quiet = await cliInProcess(["users:list"], shell);
  expect({ code: quiet.code, stderr: quiet.stderr }).toEqual({ code: 0, stderr: "" });
}, 30_000);

test("a production file from before the served profile was recorded: a command without APP_ENV and AUDIT_SECRET_KEY is refused on the key and makes no key beside it (probe 92g F3)", async () => {
  const path = databaseFile();
  const service = await startService({ ...PRODUCTION_ENV, DATABASE_PATH: path });
  await service.stop();
  const file = new Database(path);
  file.run("DELETE FROM served_profile");
  file.close();
  for (const command of ["users:list", "audit:tail", "keys:create"]) {
    const args =
      command === "keys:create" ? [command, "--name", "k", "--scopes", "chat"] : [command];
    const bare = await cliInProcess(args, { DATABASE_PATH: path });
    expect({ command, code: bare.code }).toEqual({ command, code: 2 });
    expect(bare.stderr).toBe(
      `palisade ${command}: AUDIT_SECRET_KEY is not set, and no development key file is beside the database (${path}.audit-key) while its audit log is keyed: set AUDIT_SECRET_KEY to the service's key (and APP_ENV to its profile), or copy the key file the log was written with there (a backup's PATH.audit-key)`,
    );
    expect(bare.stdout).toBe("");
    expect(existsSync(`${path}.audit-key`)).toBe(false);
  }
  expect(rows(path, "SELECT count(*) AS n FROM api_keys")).toEqual([{ n: 0 }]);
  // The service starts on it as before, and then the commands say what to set.
  const again = await startService({ ...PRODUCTION_ENV, DATABASE_PATH: path });
  await again.stop();
  const listed = await cliInProcess(["users:list"], { DATABASE_PATH: path });
  expect(listed.code).toBe(1);
  expect(listed.stderr).toContain("was last served with APP_ENV=production");
}, 30_000);
