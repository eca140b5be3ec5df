/**
 * What a start writes to many account rows (an upgrade's keys and readings) is written in short
 * parts, and a row stored before normalisation is read, and its address held, as the address it
 * normalises to (probe 94a).
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, spyOn, test } from "bun:test";
import { REQUEST_BUSY_TIMEOUT_MS } from "../../../src/db/busy";
import { inWriteParts, PART_BUDGET_MS, PART_PAUSE_MS } from "../../../src/db/write-parts";
import * as email from "../../../src/modules/auth/email";
import { STORED_ADDRESS_LONGEST } from "../../../src/modules/auth/email";
import * as emailKeys from "../../../src/modules/auth/email-keys";
import { refoldEmailKeys, unkeyedClaimedKeys } from "../../../src/modules/auth/email-keys";
import {
  READING_VERSION,
  rewriteReadings,
  storedReading,
} from "../../../src/modules/auth/readings";
import { buildTestApp, secondProcess, send, type TestApp } from "../../support/app";
import { STRONG_PASSWORD } from "../../support/auth";

const open: TestApp[] = [];
afterEach(() => {
  for (const target of open.splice(0)) target.close();
});
function app(): TestApp {
  const target = buildTestApp();
  open.push(target);
  return target;
}

let peerCounter = 0;
const nextPeer = () => `198.51.${Math.floor(++peerCounter / 250)}.${peerCounter % 250}`;
const register = (target: Parameters<typeof send>[0], email: string) =>
  send(target, "/api/auth/register", {
    body: { email, password: STRONG_PASSWORD },
    peer: nextPeer(),
  });

/** A row as a release before normalisation stored it (no key), sealed as Palisade sealed it. */
function insertUnkeyed(target: TestApp, id: string, email: string, reading: string | null) {
  const seal = target.services.credentialSeal.account({
    id,
    email,
    emailKey: null,
    passwordHash: "x",
    role: "user",
  });
  target.db.$client.run(
    `INSERT INTO users (id, email, email_key, password_hash, role, seal, reading, created_at, updated_at)
     VALUES (?, ?, NULL, 'x', 'user', ?, ?, 1, 1)`,
    [id, email, seal, reading],
  );
}

/** How many readings a rewrite wrote (it runs to the end: no other release takes the file). */
const writtenReadings = async (sqlite: Database) =>
  (await rewriteReadings(sqlite, () => true)).written;

const readingOfRow = (target: TestApp, id: string) =>
  target.db.$client
    .query<{ reading: string | null }, [string]>("SELECT reading FROM users WHERE id = ?")
    .get(id)?.reading;

test("a part and its pause fit in a request's wait for the lock, so a waiting writer gets it in the pause (probe 94a F2)", () => {
  // SQLite's busy handler tries again after 1, 2, 5, 10, 15 and 20 ms: 17 ms at most between two
  // tries within a 50 ms wait. A pause longer than that holds a try.
  expect(PART_PAUSE_MS).toBeGreaterThan(17);
  expect(PART_BUDGET_MS + PART_PAUSE_MS).toBeLessThanOrEqual(REQUEST_BUSY_TIMEOUT_MS);
});

test("write parts end once their time is spent, commit each, and pause between two (probe 94a F2: 500 rows a part held the lock 107 ms)", () => {
  const sqlite = new Database(":memory:");
  sqlite.run("CREATE TABLE t (n INTEGER)");
  // Each look at the clock is 8 ms on: a part writes rows until PART_BUDGET_MS has passed.
  const step = 8;
  let clock = 0;
  const now = () => {
    clock += step;
    return clock;
  };
  const seen: { n: number; at: number; inTransaction: boolean }[] = [];
  inWriteParts(
    sqlite,
    Array.from({ length: 10 }, (_, n) => n),
    (n) => {
      sqlite.run("INSERT INTO t VALUES (?)", [n]);
      seen.push({ n, at: performance.now(), inTransaction: sqlite.inTransaction });
    },
    now,
  );
  expect(seen.every((row) => row.inTransaction)).toBe(true);
  const parts: number[][] = [];
  for (const [index, row] of seen.entries()) {
    const pausedBefore = index > 0 && row.at - seen[index - 1]!.at >= PART_PAUSE_MS - 1;
    if (index === 0 || pausedBefore) parts.push([]);
    parts.at(-1)!.push(row.n);
  }
  const perPart = Math.ceil(PART_BUDGET_MS / step);
  expect(perPart).toBeGreaterThan(1);
  const expected: number[][] = [];
  for (let n = 0; n < 10; n += perPart) {
    expected.push(Array.from({ length: Math.min(perPart, 10 - n) }, (_, i) => n + i));
  }
  expect(parts).toEqual(expected);
  expect(sqlite.query("SELECT count(*) AS c FROM t").get()).toEqual({ c: 10 });
  sqlite.close();
});

test("a row stored before normalisation holds the address it normalises to against look-alikes, while it waits and once normalised (probe 94a F1)", async () => {
  const target = app();
  // Its reading as the release before this one wrote it: of the address as stored, domain and all.
  insertUnkeyed(target, "legacy-pay", "Pay@D.example", "0123456789ab:pay@D.example");
  // A row written into the file holds every normalisation: the legacy row waits.
  target.db.$client.run(
    `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
     VALUES ('forged', 'forged@z.example', 'forged@z.example', 'x', 'user', 'bad', 1, 1)`,
  );
  const waiting = secondProcess(target);
  try {
    expect(
      target.db.$client.query("SELECT email_key AS k FROM users WHERE id = 'legacy-pay'").get(),
    ).toEqual({ k: null });
    // Rewritten at start by the address it normalises to (in parts of a few milliseconds each:
    // on a loaded machine the first part had not reached this row when the start returned).
    await waiting.services.auth.readingsSettled();
    expect(readingOfRow(target, "legacy-pay")).toBe(storedReading("Pay@d.example"));
    // `рау` in Cyrillic reads as `pay`.
    expect((await register(waiting, "\u0440\u0430\u0443@d.example")).status).toBe(409);
    expect((await register(waiting, "pay@d.example")).status).toBe(409);
  } finally {
    waiting.close();
  }
  // The forged row removed, the next start normalises the legacy row, reading and all.
  target.db.$client.run("DELETE FROM users WHERE id = 'forged'");
  const next = secondProcess(target);
  try {
    expect(
      target.db.$client
        .query("SELECT email, email_key AS k, reading FROM users WHERE id = 'legacy-pay'")
        .get(),
    ).toEqual({
      email: "Pay@d.example",
      k: "pay@d.example",
      reading: storedReading("Pay@d.example"),
    });
    expect((await register(next, "\u0440\u0430\u0443@d.example")).status).toBe(409);
  } finally {
    next.close();
  }
});

test("readings of another version are written again, all of them, in parts; a row whose address is no text reads as nothing (probe 94a F4)", async () => {
  const target = app();
  const sqlite = target.db.$client;
  const count = 1_234;
  sqlite.transaction(() => {
    for (let n = 0; n < count; n++) {
      sqlite.run(
        `INSERT INTO users (id, email, email_key, password_hash, role, seal, reading, created_at, updated_at)
         VALUES (?, ?, ?, 'x', 'user', 'x', 'old:0', 1, 1)`,
        [`r${n}`, `user${n}@example.com`, `user${n}@example.com`],
      );
    }
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, reading, created_at, updated_at)
       VALUES ('blob', x'4142', NULL, 'x', 'user', 'x', 'old:0', 1, 1)`,
    );
  })();
  expect(await writtenReadings(sqlite)).toBe(count + 1);
  expect(readingOfRow(target, "r7")).toBe(storedReading("user7@example.com"));
  expect(readingOfRow(target, "blob")).toBe(`${READING_VERSION}:`);
  // Up to date: nothing to write.
  expect(await writtenReadings(sqlite)).toBe(0);
});

test("a value far longer than an address, stored without a key, is not read as one at each registration (probe 94a F3)", async () => {
  const target = app();
  insertUnkeyed(target, "legacy-long", `${"a".repeat(2_000)}@example.com`, null);
  insertUnkeyed(target, "legacy-held", "Held@Example.com", null);
  const read: string[] = [];
  const keyOf = (email: string) => {
    read.push(email);
    return email.toLowerCase();
  };
  expect([...unkeyedClaimedKeys(target.db, keyOf)]).toEqual(["held@example.com"]);
  expect(read).toEqual(["Held@Example.com"]);
  // Registration, the claimed keys kept by this process, still finds the row every time.
  for (const spelling of ["HELD@example.com", "held@EXAMPLE.com"]) {
    expect((await register(target, spelling)).status).toBe(409);
  }
});

test("a stored value with a NUL in it is bounded by its bytes: megabytes behind one are neither read as an address nor given a reading (probe 94d F1)", async () => {
  const target = app();
  // SQLite's `length` of this text is 1.
  const huge = `a\u0000${"\ufdfa".repeat(700_000)}@example.com`;
  insertUnkeyed(target, "legacy-nul", huge, "0123456789ab:old");
  const read: string[] = [];
  const claimed = unkeyedClaimedKeys(target.db, (email: string) => {
    read.push(email);
    return null;
  });
  expect(claimed.size).toBe(0);
  expect(read).toEqual([]);
  expect(await writtenReadings(target.db.$client)).toBe(1);
  expect(readingOfRow(target, "legacy-nul")).toBe(`${READING_VERSION}:`);
});

test("a stored address padded past 254 characters (a CHAR(255) column's padding) is read, and held, as the address it trims to (probe 94d F3)", async () => {
  const target = app();
  insertUnkeyed(target, "legacy-padded", `Pay@d.example${" ".repeat(250)}`, null);
  target.db.$client.run(
    `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
     VALUES ('forged', 'forged@z.example', 'forged@z.example', 'x', 'user', 'bad', 1, 1)`,
  );
  const waiting = secondProcess(target);
  try {
    await waiting.services.auth.readingsSettled();
    expect(readingOfRow(target, "legacy-padded")).toBe(storedReading("Pay@d.example"));
    expect((await register(waiting, "\u0440\u0430\u0443@d.example")).status).toBe(409);
  } finally {
    waiting.close();
  }
});

test("a process reads the rows stored before normalisation once, valid or not, and again when they change (probe 94d F2: invalid ones were checked at every registration; 94e F2: past a memo's bound, all of them)", async () => {
  const target = app();
  insertUnkeyed(target, "legacy-invalid", "not an address", null);
  insertUnkeyed(target, "legacy-valid", "Kept@Example.com", null);
  const checks = spyOn(emailKeys, "addressKeyOf");
  try {
    for (const n of [1, 2, 3]) {
      expect((await register(target, `new${n}@example.com`)).status).toBe(201);
    }
    // Each stored value checked once, by the first registration.
    expect(checks.mock.calls.map(([email]) => email).sort()).toEqual([
      "Kept@Example.com",
      "not an address",
    ]);
    // A row copied back into the file: read at the next registration, which it holds; the
    // others' addresses are not checked again.
    insertUnkeyed(target, "legacy-copied", "Copied@Example.com", null);
    expect((await register(target, "copied@example.com")).status).toBe(409);
    expect(checks.mock.calls).toHaveLength(3);
    expect((await register(target, "KEPT@example.com")).status).toBe(409);
    expect(checks.mock.calls).toHaveLength(3);
  } finally {
    checks.mockRestore();
  }
});

test("a row put right in place by another connection (a backup restored online: same rows, same count) is read at the next registration, and the rows are read at start, not by the first registration (probe 94g F2, F3)", async () => {
  const target = app();
  // Set aside at start as no address; the restore puts its address back.
  insertUnkeyed(target, "legacy-restored", "Pay@d.example\u0000", null);
  const checks = spyOn(emailKeys, "addressKeyOf");
  const next = secondProcess(target);
  try {
    // Read while the process is built.
    expect(checks.mock.calls.map(([email]) => email)).toContain("Pay@d.example\u0000");
    expect((await register(next, "pay@d.example")).status).toBe(201);
    // Put right in place: the same row, the same count.
    const other = new Database(target.databasePath);
    try {
      other.run("UPDATE users SET email = 'Kay@d.example' WHERE id = 'legacy-restored'");
    } finally {
      other.close();
    }
    expect((await register(next, "kay@d.example")).status).toBe(409);
  } finally {
    checks.mockRestore();
    next.close();
  }
});

test("a key folded once that is longer than a stored address can be is not read, nor folded, at start (probe 94e F3: one of 9 MB took 5 s and 650 MB at every start)", () => {
  const target = app();
  target.db.$client.run(
    `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
     VALUES ('huge-key', 'x@example.com', ?, 'x', 'user', 'bad', 1, 1)`,
    [`\u00df\u0000${"\ufdfa".repeat(1_000_000)}@example.com`],
  );
  const folds = spyOn(email, "foldCase");
  try {
    expect(refoldEmailKeys(target.db, target.services.credentialSeal)).toEqual({
      collides: [],
      heldByTampered: [],
      blockedBy: [],
    });
    const longest = Math.max(0, ...folds.mock.calls.map(([text]) => text.length));
    expect(longest).toBeLessThanOrEqual(STORED_ADDRESS_LONGEST);
  } finally {
    folds.mockRestore();
  }
});
