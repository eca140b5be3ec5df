/**
 * Two releases whose readings of addresses differ must not serve one file together (probe 94g F1:
 * each looked up readings of its own version only, and let look-alikes of the other's accounts
 * register). The file carries the readings' mark of the release that serves it; a start takes it,
 * a process of the other release refuses registrations at once and stops at its next check, and a
 * CLI command of the other release refuses the file.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  markedVersion,
  readingsMarkSql,
  readingsMarks,
  readingsMarkWatch,
  takeReadingsMark,
} from "../../src/db/readings-mark";
import { expectedSchema, schemaDifferences } from "../../src/db/schema-guard";
import {
  OTHER_READINGS_READ,
  READING_VERSION,
  storedReading,
} from "../../src/modules/auth/readings";
import { ReadingsBeingWritten } from "../../src/modules/auth/service";
import {
  buildTestApp,
  NO_READINGS_QUIET,
  send,
  servicesTold,
  type TestApp,
  tempDir,
} from "../support/app";
import { STRONG_PASSWORD } from "../support/auth";
import { cleanupsAfterEach, migratedDatabaseFile } from "../support/cleanups";
import { cliInProcess } from "../support/cli";
import { runToExit, startService } from "../support/process";
import { waitFor } from "../support/wait";

const cleanups = cleanupsAfterEach();
/** Another release's reading version: 12 hex digits, as a version is. */
const OTHER = "0123456789ab";

function app(): TestApp {
  const target = buildTestApp();
  cleanups.push(() => target.close());
  return target;
}

const migratedFile = () => migratedDatabaseFile(cleanups);

let peers = 0;
function register(target: Parameters<typeof send>[0], email: string) {
  peers++;
  return send(target, "/api/auth/register", {
    body: { email, password: STRONG_PASSWORD },
    peer: `198.51.100.${peers}`,
  });
}

/** An account row as a process of another release wrote it (no seal: the readings ignore it). */
function insertAccount(sqlite: Database, id: string, email: string, reading: string | null) {
  sqlite.run(
    `INSERT INTO users (id, email, email_key, password_hash, role, seal, reading, created_at, updated_at)
     VALUES (?, ?, ?, 'x', 'user', 'x', ?, 1, 1)`,
    [id, email, email, reading],
  );
}

/** Readings written again as soon as nothing else writes any (tests: 50 ms, looked at every 10). */
const QUICK_QUIET = { quietMs: 50, pollMs: 10 };

const readingOf = (sqlite: Database, id: string) =>
  sqlite
    .query<{ reading: string | null }, [string]>("SELECT reading FROM users WHERE id = ?")
    .get(id)?.reading;

/** A file another release served: its mark, and one account ("u") of its reading. */
function fileOfOtherRelease(): string {
  const { path, db } = migratedFile();
  db.$client.run(readingsMarkSql(OTHER));
  insertAccount(db.$client, "u", "pay@d.example", `${OTHER}:pay@d.example`);
  db.$client.close();
  return path;
}

/** The file's marks and account u's reading, as a reader of the file finds them. */
function markedAndRead(path: string) {
  const file = new Database(path, { readonly: true });
  try {
    const row = file
      .query<{ reading: string | null }, []>("SELECT reading FROM users WHERE id = 'u'")
      .get();
    return { marks: readingsMarks(file), reading: row?.reading };
  } finally {
    file.close();
  }
}

const accounts = (sqlite: Database) =>
  sqlite.query<{ n: number }, []>("SELECT count(*) AS n FROM users").get()!.n;

/** The file's readings' marks and how many accounts it holds, read-only. */
function marksAndAccounts(path: string) {
  const file = new Database(path, { readonly: true });
  try {
    return { marks: readingsMarks(file), accounts: accounts(file) };
  } finally {
    file.close();
  }
}

describe("the mark", () => {
  test("a take makes this version's mark once, drops another version's, and says what it found", () => {
    const { db } = migratedFile();
    const sqlite = db.$client;
    expect(readingsMarks(sqlite)).toEqual([]);
    expect(takeReadingsMark(sqlite, OTHER)).toEqual({ dropped: [], held: false });
    expect(takeReadingsMark(sqlite, OTHER)).toEqual({ dropped: [], held: true });
    expect(readingsMarks(sqlite)).toEqual([OTHER]);
    expect(takeReadingsMark(sqlite, READING_VERSION)).toEqual({ dropped: [OTHER], held: false });
    expect(readingsMarks(sqlite)).toEqual([READING_VERSION]);
    // It indexes no row, and no query uses it.
    sqlite.run(
      "INSERT INTO users (id, email, email_key, password_hash, role, seal, reading, created_at, updated_at) VALUES ('u', 'a@b.example', 'a@b.example', 'x', 'user', 'x', 'r', 1, 1)",
    );
    const plan = sqlite
      .query<{ detail: string }, []>("EXPLAIN QUERY PLAN SELECT id FROM users WHERE reading = 'r'")
      .all()
      .map((step) => step.detail)
      .join(" ");
    expect(plan).not.toContain("users_readings_");
    db.$client.close();
  });

  test("the schema guard takes this version's mark as the migrations' own, another version's as a difference, and an index only named like a mark as someone else's", () => {
    const { db } = migratedFile();
    const sqlite = db.$client;
    const expected = expectedSchema();
    sqlite.run(readingsMarkSql(READING_VERSION));
    expect(schemaDifferences(sqlite, expected, READING_VERSION)).toEqual([]);
    sqlite.run(readingsMarkSql(OTHER));
    expect(schemaDifferences(sqlite, expected, READING_VERSION)).toEqual([
      `index users_readings_${OTHER} on users marks the accounts' readings as another release's (reading version ${OTHER}, this one's ${READING_VERSION})`,
    ]);
    // Inside the migrations, before a start takes the file: any mark.
    expect(schemaDifferences(sqlite, expected)).toEqual([]);
    // Named as a mark, made otherwise: a unique index would turn registrations into conflicts.
    sqlite.run(`DROP INDEX "users_readings_${OTHER}"`);
    sqlite.run(`CREATE UNIQUE INDEX "users_readings_${OTHER}" ON "users" ("id") WHERE 0`);
    expect(markedVersion(`users_readings_${OTHER}`, readingsMarkSql(OTHER))).toBe(OTHER);
    const someoneElses = [`index users_readings_${OTHER} on users is not one of its migrations'`];
    expect(schemaDifferences(sqlite, expected, READING_VERSION)).toEqual(someoneElses);
    expect(schemaDifferences(sqlite, expected)).toEqual(someoneElses);
    // And a take leaves it for the guard to refuse.
    expect(takeReadingsMark(sqlite, READING_VERSION)).toEqual({ dropped: [], held: true });
    // Another table's index by a mark's name is no mark either.
    sqlite.run(`DROP INDEX "users_readings_${OTHER}"`);
    sqlite.run(`CREATE INDEX "users_readings_${OTHER}" ON "api_keys" ("id") WHERE 0`);
    expect(readingsMarks(sqlite)).toEqual([READING_VERSION]);
    expect(schemaDifferences(sqlite, expected, READING_VERSION)).toEqual([
      `index users_readings_${OTHER} on api_keys is not one of its migrations'`,
    ]);
    db.$client.close();
  });

  test("the watch reads the marks again only once the schema changed", () => {
    const { db } = migratedFile();
    const sqlite = db.$client;
    const ours = readingsMarkWatch(sqlite, READING_VERSION);
    expect(ours()).toBe(true);
    takeReadingsMark(sqlite, READING_VERSION);
    expect(ours()).toBe(true);
    takeReadingsMark(sqlite, OTHER);
    expect(ours()).toBe(false);
    expect(ours()).toBe(false);
    takeReadingsMark(sqlite, READING_VERSION);
    expect(ours()).toBe(true);
    db.$client.close();
  });
});

describe("a process whose file another release took", () => {
  test("refuses registrations at once (503, nothing written), and stops at its next check with a line saying why", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const { services, logs, stops } = servicesTold(target);
    cleanups.push(() => services.close());
    takeReadingsMark(sqlite, READING_VERSION);
    expect((await register(target, "first@example.com")).status).toBe(201);
    services.runMaintenance();
    expect(stops).toEqual([]);

    takeReadingsMark(sqlite, OTHER);
    const refused = await register(target, "second@example.com");
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("5");
    expect((await refused.json()) as Record<string, unknown>).toMatchObject({
      code: "SERVICE_UNAVAILABLE",
      detail: "This process is stopping: another release took its database. Retry shortly.",
    });
    expect(accounts(sqlite)).toBe(1);

    services.runMaintenance();
    const difference = `index users_readings_${OTHER} on users marks the accounts' readings as another release's (reading version ${OTHER}, this one's ${READING_VERSION})`;
    expect(stops).toEqual([[difference]]);
    expect(logs.entries.find((entry) => entry.level === "error")).toMatchObject({
      msg: `a process of another release, whose readings of addresses differ (reading version ${OTHER}), started on this file and took it: stopping (two such releases cannot serve one file together: each would let look-alikes of the other's accounts register)`,
      differences: [difference],
    });
  });

  test("an account a process of the other release registered meanwhile, its reading that release's, still holds its look-alikes", async () => {
    const target = app();
    const sqlite = target.db.$client;
    expect((await register(target, "pay@d.example")).status).toBe(201);
    expect((await register(target, "pop@d.example")).status).toBe(201);
    // As the other release stored them: its own reading, or none.
    sqlite.run(`UPDATE users SET reading = '${OTHER}:pay@d.example' WHERE email = 'pay@d.example'`);
    sqlite.run("UPDATE users SET reading = NULL WHERE email = 'pop@d.example'");
    // `рау` and `рор` with Cyrillic letters read as `pay` and `pop`.
    expect((await register(target, "\u0440\u0430\u0443@d.example")).status).toBe(409);
    expect((await register(target, "\u0440\u043e\u0440@d.example")).status).toBe(409);
    expect(accounts(sqlite)).toBe(2);
    // An address no account reads as still registers.
    expect((await register(target, "other@d.example")).status).toBe(201);
  });
});

describe("readings of another version written while serving (probe 95a F1)", () => {
  /** `count` accounts of another version's reading, as its process wrote them. */
  function otherReadings(sqlite: Database, count: number) {
    sqlite.transaction(() => {
      for (let n = 0; n < count; n++) {
        insertAccount(sqlite, `o${n}`, `pay${n}@d.example`, `${OTHER}:pay${n}@d.example`);
      }
    })();
  }
  const ofThisVersion = (sqlite: Database) =>
    sqlite
      .query<{ n: number }, [string]>("SELECT count(*) AS n FROM users WHERE reading LIKE ?")
      .get(`${READING_VERSION}:%`)!.n;

  test("past what a registration reads, registrations wait (503) until the maintenance has written them again; the look-alikes of every one are then taken", async () => {
    const target = app();
    const sqlite = target.db.$client;
    // One account registered (sealed: only a sealed address's reading holds it), and as many
    // others as a registration reads, every reading another version's.
    expect((await register(target, "pay@d.example")).status).toBe(201);
    sqlite.run(`UPDATE users SET reading = '${OTHER}:pay@d.example'`);
    otherReadings(sqlite, OTHER_READINGS_READ);
    // `рау` in Cyrillic reads as `pay`.
    const lookAlike = "\u0440\u0430\u0443@d.example";
    const waiting = await register(target, lookAlike);
    expect(waiting.status).toBe(503);
    expect(waiting.headers.get("retry-after")).toBe("10");
    expect(((await waiting.json()) as { detail: string }).detail).toBe(
      "Accounts are being upgraded; retry shortly.",
    );
    const { services, logs } = servicesTold(target, { readingsQuiet: QUICK_QUIET });
    cleanups.push(() => services.close());
    services.runMaintenance();
    await services.auth.readingsSettled();
    expect(ofThisVersion(sqlite)).toBe(OTHER_READINGS_READ + 1);
    expect(readingsMarks(sqlite)).toEqual([READING_VERSION]);
    expect(logs.entries.map((entry) => entry.msg)).toContain(
      "accounts' readings (look-alike addresses) of another version found: the file is marked as this release's while they are written again; a process of an earlier release still serving it stops at its next check, saying an index on users is not one of its migrations'",
    );
    expect((await register(target, lookAlike)).status).toBe(409);
    expect(accounts(sqlite)).toBe(OTHER_READINGS_READ + 1);
    // Nothing left of another version: the next tick writes nothing, and leaves the mark.
    services.runMaintenance();
    await services.auth.readingsSettled();
    expect(readingsMarks(sqlite)).toEqual([READING_VERSION]);
  });

  test("the rewrite writes no part once another release took the file", async () => {
    const target = app();
    const sqlite = target.db.$client;
    otherReadings(sqlite, 3_000);
    takeReadingsMark(sqlite, OTHER);
    const { services, logs } = servicesTold(target, { readingsQuiet: NO_READINGS_QUIET });
    cleanups.push(() => services.close());
    services.auth.keepReadings({ atStart: true });
    // Its first part is written before the first pause; a third release takes the file then.
    const beforeTake = ofThisVersion(sqlite);
    expect(beforeTake).toBeGreaterThan(0);
    expect(beforeTake).toBeLessThan(3_000);
    takeReadingsMark(sqlite, "fedcba987654");
    await services.auth.readingsSettled();
    expect(ofThisVersion(sqlite)).toBe(beforeTake);
    expect(logs.entries.filter((entry) => entry.level === "warn").at(-1)).toMatchObject({
      msg: "another release took the file while this process wrote the accounts' readings: it wrote no more of them",
      accounts: beforeTake,
    });
  });
});

describe("a file taken with no mark on it (probe 95b F1)", () => {
  test("its readings are written again only once those of other versions have stayed as they are for the quiet time, and registrations wait until then", async () => {
    const target = buildTestApp({ readingsQuiet: { quietMs: 400, pollMs: 20 } });
    cleanups.push(() => target.close());
    const { services } = target;
    const sqlite = target.db.$client;
    // One account whose reading a release before the mark wrote: fewer than a registration reads.
    expect((await register(target, "pay@d.example")).status).toBe(201);
    sqlite.run(`UPDATE users SET reading = '${OTHER}:pay@d.example'`);
    const started = performance.now();
    services.auth.keepReadings({ atStart: true });
    expect(readingsMarks(sqlite)).toEqual([READING_VERSION]);
    // That release, still serving until its next tick, goes on writing its own readings: the wait
    // starts again each time.
    await Bun.sleep(200);
    insertAccount(sqlite, "late", "late@d.example", `${OTHER}:late@d.example`);
    const waiting = await register(target, "other@d.example");
    expect(waiting.status).toBe(503);
    expect(waiting.headers.get("retry-after")).toBe("10");
    expect(readingOf(sqlite, "late")).toBe(`${OTHER}:late@d.example`);
    await services.auth.readingsSettled();
    // Not before the quiet time after the last change (200 ms in, and a poll to see it).
    expect(performance.now() - started).toBeGreaterThanOrEqual(600);
    expect(readingOf(sqlite, "late")).toBe(storedReading("late@d.example"));
    expect((await register(target, "other@d.example")).status).toBe(201);
    expect((await register(target, "\u0440\u0430\u0443@d.example")).status).toBe(409);
  });

  test("a file taken from another marked release waits the quiet time too: that mark may be seconds old (probe 95c F1); accounts erased meanwhile do not start the wait again (95c F2)", async () => {
    const target = buildTestApp({ readingsQuiet: { quietMs: 300, pollMs: 20 } });
    cleanups.push(() => target.close());
    const sqlite = target.db.$client;
    // A first registration loads the password checker (longer than the quiet time here).
    expect((await register(target, "first@d.example")).status).toBe(201);
    for (let n = 0; n < 6; n++) {
      insertAccount(sqlite, `u${n}`, `pay${n}@d.example`, `${OTHER}:pay${n}@d.example`);
    }
    takeReadingsMark(sqlite, OTHER);
    const started = performance.now();
    target.services.auth.keepReadings({ atStart: true });
    expect(readingsMarks(sqlite)).toEqual([READING_VERSION]);
    expect(readingOf(sqlite, "u0")).toBe(`${OTHER}:pay0@d.example`);
    expect((await register(target, "fresh@d.example")).status).toBe(503);
    // An account erased every 150 ms: fewer readings of that version, no reason to wait longer
    // (waited again at each, the last at 750 ms would have held it past 1,050 ms).
    for (let n = 1; n < 6; n++) {
      await Bun.sleep(150);
      sqlite.run("DELETE FROM users WHERE id = ?", [`u${n}`]);
    }
    await target.services.auth.readingsSettled();
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(300);
    expect(waited).toBeLessThan(900);
    expect(readingOf(sqlite, "u0")).toBe(storedReading("pay0@d.example"));
    expect(target.logs.entries.map((entry) => entry.msg)).toContain(
      "no reading of another version written for the quiet time: writing the accounts' readings again",
    );
  });
});

/**
 * Services whose registrations wait for the start's look at the readings, the password checker
 * loaded (a weak password is refused before any wait), so a registration is hashed well within a
 * second and then waits.
 */
async function beforeTheLook() {
  const target = app();
  const { services } = servicesTold(target, {
    registrationsAfterReadings: true,
    readingsQuiet: NO_READINGS_QUIET,
  });
  cleanups.push(() => services.close());
  expect((await services.auth.register("pay@d.example", "password", null)).code).toBe(
    "WEAK_PASSWORD",
  );
  return { target, services };
}

describe("registrations before the start has looked at the readings (probe 95e F1)", () => {
  test("wait for it, and register once it has: nothing written before", async () => {
    const { target, services } = await beforeTheLook();
    const registered = services.auth.register("pay@d.example", STRONG_PASSWORD, null);
    await Bun.sleep(1_000);
    expect(accounts(target.db.$client)).toBe(0);
    services.auth.keepReadings({ atStart: true });
    expect((await registered).code).toBe("CREATED");
    expect(accounts(target.db.$client)).toBe(1);
  });

  test("a start stopped before it looks: the registrations waiting answer 503 at once, nothing written (probe 96a F6)", async () => {
    const { target, services } = await beforeTheLook();
    const registered = services.auth.register("pay@d.example", STRONG_PASSWORD, null);
    const refused = expect(registered).rejects.toBeInstanceOf(ReadingsBeingWritten);
    await Bun.sleep(500);
    const told = performance.now();
    services.auth.readingsNotLookedAtStart();
    await refused;
    expect(performance.now() - told).toBeLessThan(1_000);
    expect(accounts(target.db.$client)).toBe(0);
  });

  test("a start that never looks (stopped, or the file locked for seconds): 503 after 3 s, nothing written", async () => {
    const target = app();
    const { services } = servicesTold(target, {
      registrationsAfterReadings: true,
      readingsQuiet: NO_READINGS_QUIET,
    });
    cleanups.push(() => services.close());
    const began = performance.now();
    await expect(
      services.auth.register("pay@d.example", STRONG_PASSWORD, null),
    ).rejects.toBeInstanceOf(ReadingsBeingWritten);
    expect(performance.now() - began).toBeGreaterThanOrEqual(2_900);
    expect(accounts(target.db.$client)).toBe(0);
  }, 15_000);
});

describe("a start and a command", () => {
  test("a start refused once its port is found taken leaves the file as it was: its mark and readings another release's (probe 95a F2)", async () => {
    const path = fileOfOtherRelease();
    const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const start = await runToExit(["bun", "run", "src/index.ts"], {
        DATABASE_PATH: path,
        HOST: "127.0.0.1",
        PORT: String(taken.port),
      });
      expect(start.code).toBe(2);
      expect(start.stderr).toContain("refusing to start");
    } finally {
      taken.stop(true);
    }
    expect(markedAndRead(path)).toEqual({ marks: [OTHER], reading: `${OTHER}:pay@d.example` });
  }, 30_000);

  test("a start signalled to stop while it starts stops without taking the file (probe 95b F2)", async () => {
    const path = fileOfOtherRelease();
    // The write lock held: the start waits for it (its audit log's first row), and is signalled.
    const holder = new Database(path);
    holder.run("BEGIN IMMEDIATE");
    const proc = Bun.spawn(["bun", "run", "src/index.ts"], {
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        PORT: "0",
        DATABASE_PATH: path,
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    cleanups.push(() => {
      if (proc.exitCode === null) proc.kill("SIGKILL");
    });
    const stdout = new Response(proc.stdout).text();
    const stderr = new Response(proc.stderr).text();
    await Bun.sleep(1_000);
    proc.kill("SIGTERM");
    await Bun.sleep(100);
    holder.run("ROLLBACK");
    holder.close();
    expect(await proc.exited).toBe(0);
    expect(await stdout).toContain('"msg":"shutdown complete"');
    expect(await stderr).not.toContain("refusing");
    expect(markedAndRead(path)).toEqual({ marks: [OTHER], reading: `${OTHER}:pay@d.example` });
  }, 30_000);

  test("a start whose file another connection holds locked keeps serving, and marks it once the lock is gone", async () => {
    const { path, db } = migratedFile();
    db.$client.close();
    const service = await startService({ DATABASE_PATH: path });
    const holder = new Database(path);
    let code: number;
    try {
      holder.run("BEGIN IMMEDIATE");
      // Past the take's first try (a tenth of a second in) and its first retry.
      await Bun.sleep(1_500);
      const asked = performance.now();
      expect((await fetch(new URL("/health", service.url))).status).toBe(200);
      expect(performance.now() - asked).toBeLessThan(1_000);
      expect(service.stdout()).toContain("the database is locked; trying again every second");
    } finally {
      holder.run("ROLLBACK");
      holder.close();
      await waitFor(
        () => service.stdout().includes("the file is marked as served by this release"),
        {
          timeoutMs: 10_000,
          intervalMs: 20,
        },
      ).finally(async () => {
        code = await service.stop();
      });
    }
    expect(code!).toBe(0);
    expect(markedAndRead(path).marks).toEqual([READING_VERSION]);
  }, 30_000);

  test("a start marks an unmarked file, readings to write or not, and with none to write registers at once (probe 95d F1: left unmarked, a release before the mark whose readings differ started beside it)", async () => {
    const { path, db } = migratedFile();
    insertAccount(db.$client, "u", "pay@d.example", storedReading("pay@d.example"));
    db.$client.close();
    const service = await startService({ DATABASE_PATH: path });
    await waitFor(() => service.stdout().includes("the file is marked as served by this release"), {
      timeoutMs: 10_000,
      intervalMs: 20,
    });
    const registered = await fetch(new URL("/api/auth/register", service.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "fresh@d.example", password: STRONG_PASSWORD }),
    });
    expect(registered.status).toBe(201);
    await service.stop();
    expect(marksAndAccounts(path).marks).toEqual([READING_VERSION]);
  }, 30_000);

  test("a start takes a file another release marked: its mark dropped, and a warning; the readings wait the quiet time, registrations meanwhile 503", async () => {
    const path = fileOfOtherRelease();
    const service = await startService({ DATABASE_PATH: path });
    // Taken once the start is over (a tenth of a second after it listens); written 15 s later.
    await waitFor(() => service.stdout().includes("registrations here wait until then"), {
      timeoutMs: 10_000,
      intervalMs: 20,
    });
    const waiting = await fetch(new URL("/api/auth/register", service.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "fresh@d.example", password: STRONG_PASSWORD }),
    });
    expect(waiting.status).toBe(503);
    await service.stop();
    const line = service
      .stdout()
      .split("\n")
      .filter((entry) => entry.includes("were another release's"))
      .map((entry) => JSON.parse(entry) as Record<string, unknown>);
    expect(line).toHaveLength(1);
    expect(line[0]).toMatchObject({
      level: "warn",
      readingVersions: [OTHER],
      readingVersion: READING_VERSION,
    });
    expect(markedAndRead(path)).toEqual({
      marks: [READING_VERSION],
      reading: `${OTHER}:pay@d.example`,
    });
  }, 30_000);

  test("a command refuses a file another release marked, in one line, and leaves it as it was; only users:create marks a file, and not one holding readings of another version", async () => {
    const { path, db } = migratedFile();
    db.$client.run(readingsMarkSql(OTHER));
    db.$client.close();
    const refused = await cliInProcess(["users:list"], { DATABASE_PATH: path });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `palisade users:list: DATABASE_PATH ${path}: its accounts' readings (look-alike addresses) are another release's (reading version ${OTHER}, this one's ${READING_VERSION}), which may be serving it: run this command with that release, or start this release on the file first`,
    );
    const file = new Database(path);
    try {
      expect(readingsMarks(file)).toEqual([OTHER]);
      file.run(`DROP INDEX "users_readings_${OTHER}"`);
      // An account of another version's reading, as a release before the mark wrote it.
      insertAccount(file, "u", "pay@d.example", `${OTHER}:pay@d.example`);
    } finally {
      file.close();
    }
    // Probe 95a F3: a reading command marked the file, and stopped a release before the mark.
    expect((await cliInProcess(["users:list"], { DATABASE_PATH: path })).code).toBe(0);
    // Probe 95d F2: users:create wrote a reading a release before the mark serving the file did not
    // see; unmarked with another version's readings, it asks for a start first.
    const create = (email: string) =>
      cliInProcess(
        ["users:create", "--email", email, "--role", "admin", "--password-stdin"],
        { DATABASE_PATH: path },
        STRONG_PASSWORD,
      );
    const refusedCreate = await create("root@example.test");
    expect(refusedCreate.code).toBe(1);
    expect(refusedCreate.stderr).toBe(
      "palisade users:create: the accounts' readings (look-alike addresses) are another version's and the file is not yet marked as this release's: start this release on the file first (stopping every process of an older release), then retry",
    );
    const unmarked = new Database(path);
    try {
      expect(readingsMarks(unmarked)).toEqual([]);
      expect(accounts(unmarked)).toBe(1);
      unmarked.run("UPDATE users SET reading = ?", [storedReading("pay@d.example")]);
    } finally {
      unmarked.close();
    }
    // Refused for its address, its password or as a duplicate, it writes nothing and leaves the
    // file unmarked (probe 96a F2: each marked it, stopping a release before the mark serving it).
    const refusals = [
      await cliInProcess(["users:create", "--email", "not-an-address"], { DATABASE_PATH: path }),
      await cliInProcess(
        ["users:create", "--email", "weak@example.test", "--password-stdin"],
        { DATABASE_PATH: path },
        "password",
      ),
      await create("pay@d.example"),
    ];
    expect(refusals.map((refused) => [refused.code, refused.stderr.includes("marked")])).toEqual([
      [2, false],
      [1, false],
      [1, false],
    ]);
    expect(marksAndAccounts(path)).toEqual({ marks: [], accounts: 1 });
    // With none of another version, it marks the file, says so (probe 95e F2: a release before
    // the mark serving it stopped, its line blaming an index), and creates the account.
    const marking = await create("root@example.test");
    expect(marking.code).toBe(0);
    const markedSaid =
      "the file is now marked as served by this release's readings (look-alike addresses): a process of a release before the mark serving it stops at its next check, saying an index on users is not one of its migrations'";
    expect(marking.stderr).toBe(markedSaid);
    // Marked already: nothing said.
    const again = await create("second@example.test");
    expect(again.code).toBe(0);
    expect(again.stderr).toBe("");
    expect(marksAndAccounts(path)).toEqual({ marks: [READING_VERSION], accounts: 3 });
  }, 30_000);

  test("users:create says it marked a file it did not make, accounts or none (probe 96a F3), and nothing of one it makes", async () => {
    const said =
      "the file is now marked as served by this release's readings (look-alike addresses): a process of a release before the mark serving it stops at its next check, saying an index on users is not one of its migrations'";
    const create = (path: string) =>
      cliInProcess(
        ["users:create", "--email", "admin@example.test", "--role", "admin", "--password-stdin"],
        { DATABASE_PATH: path },
        STRONG_PASSWORD,
      );
    // A release before the mark may serve a file before its first account.
    const { path, db } = migratedFile();
    db.$client.close();
    const served = await create(path);
    expect(served.code).toBe(0);
    expect(served.stderr).toBe(said);
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const made = join(dir.path, "new.db");
    const fresh = await create(made);
    expect(fresh.code).toBe(0);
    expect(fresh.stderr).toBe("");
    for (const file of [path, made])
      expect(marksAndAccounts(file).marks).toEqual([READING_VERSION]);
  }, 30_000);
});
