/**
 * Block seals (plugins/ip-block/seal.ts): someone who can write the database file, but does not
 * hold AUDIT_SECRET_KEY, cannot block an address or lock a living user out. Every way of writing a
 * block row into the file — a new row, a forged seal, a sealed row changed (longer, another
 * subject, another source), a sealed row copied under new ids — blocks nothing, lengthens no
 * automatic block, is listed nowhere, and is reported once; what Palisade itself changes (a lift,
 * an erasure) stays sealed.
 */
import { describe, expect, test } from "bun:test";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { applyMigrationsFrom } from "../../src/db/migrate-from-folder";
import {
  BLOCK_SEALS_MIGRATION,
  blockSealing,
  createBlockSeal,
  SEALED_BLOCK_COLUMNS,
  type SealedBlock,
} from "../../src/plugins/ip-block/seal";
import { buildTestApp, send, type TestApp, tempDir } from "../support/app";
import { bearer, signUp } from "../support/auth";
import { cleanupsAfterEach } from "../support/cleanups";
import { cliInProcess } from "../support/cli";
import { ManualClock } from "../support/clock";
import { migrationsUpTo, migrationTagsFrom, putBackBefore } from "../support/migrations";

const cleanups = cleanupsAfterEach();
const MINUTE = 60_000;
const YEAR = 365 * 24 * 60 * MINUTE;

/** An app whose limit refuses an address's second request a minute, unless `withAccounts`. */
function app(clock = new ManualClock(), withAccounts = false): TestApp {
  const target = buildTestApp({
    env: withAccounts ? {} : { RATE_LIMIT_PER_MINUTE: "1", RATE_LIMIT_BURST: "100" },
    clock,
  });
  cleanups.push(() => target.close());
  return target;
}

type StoredRow = SealedBlock & { seal: string | null };

/** The block rows, in the order they were written (ids are drawn at random). */
function rows(target: TestApp): StoredRow[] {
  return target.db.$client
    .query<StoredRow, []>(
      `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks ORDER BY created_at, address, id`,
    )
    .all();
}

/** Whether every block row in the file matches its seal under the app's key. */
function everyRowSealed(target: TestApp): boolean {
  const seal = createBlockSeal(target.config.audit.secretKey);
  return rows(target).every((row) => seal.intact(row));
}

function tamperReports(target: TestApp): { table: string; id: string }[] {
  target.services.audit.flush();
  return target.db.$client
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'ip.block_tampered' ORDER BY id",
    )
    .all()
    .map((row) => JSON.parse(row.detail));
}

/** A row as someone with only the file writes it. */
function writeIntoFile(
  target: TestApp,
  row: { address: string; source?: string; expiresAt: number; seal?: string | null },
): number {
  const now = target.services.clock.now();
  return Number(
    target.db.$client
      .query(
        `INSERT INTO ip_blocks (address, reason, source, created_by, created_at, expires_at, seal)
         VALUES (?, 'written into the file', ?, NULL, ?, ?, ?)`,
      )
      .run(row.address, row.source ?? "admin", now, row.expiresAt, row.seal ?? null)
      .lastInsertRowid,
  );
}

/** Sends until the address has collected `refusals` rate-limit refusals. */
async function provoke(target: TestApp, peer: string, refusals: number) {
  let refused = 0;
  while (refused < refusals) {
    if ((await send(target, "/openapi.json", { peer })).status === 429) refused++;
  }
}

describe("a block row written into the database file", () => {
  test("a lockout of a living user for a year, unsealed or with a made-up seal, locks nothing out", async () => {
    const clock = new ManualClock();
    const target = app(clock, true);
    const bob = await signUp(target);
    const now = clock.now();
    const unsealed = writeIntoFile(target, {
      address: `user:${bob.userId}`,
      expiresAt: now + YEAR,
    });
    const madeUp = writeIntoFile(target, {
      address: `user:${bob.userId}`,
      source: "auto",
      expiresAt: now + YEAR,
      seal: "x".repeat(43),
    });
    clock.advance(1_001);
    const me = await send(target, "/api/auth/me", { headers: bearer(bob.accessToken) });
    expect(me.status).toBe(200);
    expect(await send(target, "/api/auth/me", { headers: bearer(bob.accessToken) })).toHaveProperty(
      "status",
      200,
    );
    // Reported once per row, whatever the number of requests that read it.
    expect(tamperReports(target)).toEqual([
      { table: "ip_blocks", id: String(unsealed) },
      { table: "ip_blocks", id: String(madeUp) },
    ]);
    const errors = target.logs.entries.filter((entry) => entry.level === "error");
    expect(errors.map((entry) => [entry.msg, entry.id])).toEqual([
      [
        "a block row does not match its seal: it was written into the database file, not by Palisade; it blocks nothing",
        unsealed,
      ],
      [
        "a block row does not match its seal: it was written into the database file, not by Palisade; it blocks nothing",
        madeUp,
      ],
    ]);
    // The rows stay in the file for whoever investigates.
    expect(rows(target).map((row) => row.id)).toEqual([unsealed, madeUp]);
  });

  test("an address block blocks nothing and is listed nowhere: not by the admin API, not by blocks:list, not on /metrics", async () => {
    const clock = new ManualClock();
    const target = app(clock, true);
    const admin = await signUp(target, { role: "admin" });
    writeIntoFile(target, { address: "198.51.100.9", expiresAt: clock.now() + YEAR });
    clock.advance(1_001);
    expect((await send(target, "/openapi.json", { peer: "198.51.100.9" })).status).toBe(200);
    const listed = await send(target, "/api/admin/blocks", { headers: bearer(admin.accessToken) });
    expect(((await listed.json()) as { blocks: unknown[] }).blocks).toEqual([]);
    const cli = await cliInProcess(["blocks:list"], { DATABASE_PATH: target.databasePath });
    expect(cli.code).toBe(0);
    expect(cli.stdout).not.toContain("198.51.100.9");
    const metrics = await (await send(target, "/metrics", { peer: "127.0.0.1" })).text();
    expect(metrics).toContain("ip_blocks_active 0");
  });

  test("a sealed block changed — made longer, moved to another subject, or its source changed — blocks nothing", async () => {
    const clock = new ManualClock();
    const target = app(clock);
    const longer = target.services.ipBlocks.block({
      address: "192.0.2.10",
      reason: "r",
      ttlMs: 15 * MINUTE,
      source: "admin",
    });
    const moved = target.services.ipBlocks.block({
      address: "192.0.2.11",
      reason: "r",
      ttlMs: 15 * MINUTE,
      source: "admin",
    });
    const resourced = target.services.ipBlocks.block({
      address: "192.0.2.12",
      reason: "r",
      ttlMs: 15 * MINUTE,
      source: "admin",
    });
    const sqlite = target.db.$client;
    sqlite.run("UPDATE ip_blocks SET expires_at = expires_at + ? WHERE id = ?", [YEAR, longer.id]);
    sqlite.run("UPDATE ip_blocks SET address = '192.0.2.99' WHERE id = ?", [moved.id]);
    sqlite.run("UPDATE ip_blocks SET source = 'auto' WHERE id = ?", [resourced.id]);
    clock.advance(1_001);
    for (const peer of ["192.0.2.10", "192.0.2.11", "192.0.2.99", "192.0.2.12"]) {
      expect([peer, (await send(target, "/openapi.json", { peer })).status]).toEqual([peer, 200]);
    }
    const byNumber = (a: number, b: number) => a - b;
    expect(
      tamperReports(target)
        .map((report) => Number(report.id))
        .sort(byNumber),
    ).toEqual([longer.id, moved.id, resourced.id].sort(byNumber));
  });

  test("a forged block in force does not stop or lengthen the real automatic one", async () => {
    const clock = new ManualClock();
    const target = app(clock);
    writeIntoFile(target, {
      address: "203.0.113.40",
      source: "auto",
      expiresAt: clock.now() + YEAR,
    });
    await provoke(target, "203.0.113.40", 5);
    const blocked = await send(target, "/openapi.json", { peer: "203.0.113.40" });
    expect(blocked.status).toBe(403);
    expect(Number(blocked.headers.get("retry-after"))).toBe(15 * 60);
    // The real block was made, sealed, and audited.
    target.services.audit.flush();
    expect(
      target.db.$client
        .query("SELECT count(*) AS n FROM audit_events WHERE type = 'ip.blocked'")
        .get(),
    ).toEqual({ n: 1 });
    // Found in the transaction that made the real block: reported once that transaction ended.
    expect(tamperReports(target)).toHaveLength(1);
    clock.advance(15 * MINUTE + 1_000);
    expect((await send(target, "/openapi.json", { peer: "203.0.113.40" })).status).not.toBe(403);
  });

  test("a sealed automatic block copied under new ids counts as no earlier offence", async () => {
    const clock = new ManualClock();
    const target = app(clock);
    await provoke(target, "203.0.113.41", 5);
    const first = await send(target, "/openapi.json", { peer: "203.0.113.41" });
    expect(Number(first.headers.get("retry-after"))).toBe(15 * 60);
    // Copies, seal and all: the next block would be 24 hours if they counted as two more offences.
    const copy = `INSERT INTO ip_blocks (address, reason, source, created_by, created_at, expires_at, lifted_at, seal)
      SELECT address, reason, source, created_by, created_at, expires_at, lifted_at, seal FROM ip_blocks WHERE address = ?`;
    target.db.$client.run(copy, ["203.0.113.41"]);
    target.db.$client.run(copy, ["203.0.113.41"]);
    expect(rows(target)).toHaveLength(4);
    clock.advance(15 * MINUTE + 11 * MINUTE);
    await provoke(target, "203.0.113.41", 5);
    const second = await send(target, "/openapi.json", { peer: "203.0.113.41" });
    expect(second.status).toBe(403);
    expect(Number(second.headers.get("retry-after"))).toBe(60 * 60);
    expect(tamperReports(target)).toHaveLength(3);
  });
});

describe("the gauge's sweep and rows written into the file (probe 84l)", () => {
  const gaugeOf = async (target: TestApp) =>
    /^ip_blocks_active (\d+)$/m.exec(
      await (await send(target, "/metrics", { peer: "127.0.0.1" })).text(),
    )?.[1];

  test("300 forged rows ending past 2^53 neither count nor hold the sweep: blocks made and lifted after them are counted (F1)", async () => {
    const clock = new ManualClock();
    const target = app(clock, true);
    const block = (address: string) =>
      target.services.ipBlocks.block({ address, reason: "r", ttlMs: 60 * MINUTE, source: "admin" });
    block("192.0.2.201");
    for (let i = 0; i < 300; i++) {
      writeIntoFile(target, { address: `198.18.0.${i % 250}`, expiresAt: 2 ** 53 });
    }
    // Past what a JS number holds exactly: read back, it rounds to 2^53.
    target.db.$client.run(
      "UPDATE ip_blocks SET expires_at = 9007199254740993 WHERE address LIKE '198.18.%'",
    );
    await gaugeOf(target);
    block("192.0.2.202");
    block("192.0.2.203");
    let gauge: string | undefined;
    for (let scrape = 0; scrape < 20 && gauge !== "3"; scrape++) gauge = await gaugeOf(target);
    expect(gauge).toBe("3");
    await target.services.ipBlocks.lift("192.0.2.202", "test");
    for (let scrape = 0; scrape < 20 && gauge !== "2"; scrape++) gauge = await gaugeOf(target);
    expect(gauge).toBe("2");
  });

  test("a sealed row whose NULL creator is written as '' fails its seal for the gauge too, whose memory of checked rows knows them apart (F2)", async () => {
    const clock = new ManualClock();
    const target = app(clock, true);
    const made = target.services.ipBlocks.block({
      address: "192.0.2.210",
      reason: "r",
      ttlMs: 60 * MINUTE,
      source: "auto",
    });
    target.services.ipBlocks.block({
      address: "192.0.2.211",
      reason: "r",
      ttlMs: 60 * MINUTE,
      source: "auto",
    });
    expect(await gaugeOf(target)).toBe("2");
    target.db.$client.run("UPDATE ip_blocks SET created_by = '' WHERE id = ?", [made.id]);
    let gauge: string | undefined;
    for (let scrape = 0; scrape < 20 && gauge !== "1"; scrape++) gauge = await gaugeOf(target);
    expect(gauge).toBe("1");
    expect(tamperReports(target)).toEqual([{ table: "ip_blocks", id: String(made.id) }]);
  });
});

describe("the file's ids and sizes (probe 19a)", () => {
  test("a sequence pushed past what JavaScript counts, or to its end, changes nothing: blocks are made, sealed and lifted; a copy at a huge id counts for nothing", async () => {
    const clock = new ManualClock();
    const target = app(clock);
    const sqlite = target.db.$client;
    const service = target.services.ipBlocks;
    for (const seq of ["1152921504606846975", "9223372036854775807"]) {
      sqlite.run(`INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('ip_blocks', ${seq})`);
      const block = service.block({
        address: "192.0.2.20",
        reason: "r",
        ttlMs: MINUTE,
        source: "admin",
      });
      expect(Number.isSafeInteger(block.id)).toBe(true);
      expect(everyRowSealed(target)).toBe(true);
      expect(service.listActive().map((listed) => listed.id)).toEqual([block.id]);
      expect(await service.lift("192.0.2.20", "test")).toBe(1);
      expect(service.listActive()).toEqual([]);
    }
    // A sealed lockout copied, seal and all, under ids past 2^53 (read back rounded).
    const lockout = service.block({
      address: "user:u1",
      reason: "r",
      ttlMs: 5 * MINUTE,
      source: "auto",
    });
    sqlite.run(
      `INSERT INTO ip_blocks (id, address, reason, source, created_by, created_at, expires_at, lifted_at, seal)
       SELECT 1152921504606846976 + n, address, reason, source, created_by, created_at, expires_at, lifted_at, seal
       FROM ip_blocks, (SELECT 1 AS n UNION SELECT 2 UNION SELECT 3) WHERE id = ?`,
      [lockout.id],
    );
    expect(service.listActive().map((listed) => listed.id)).toEqual([lockout.id]);
    expect(await service.lift("user:u1", "test")).toBe(1);
    clock.advance(1_001);
    expect(service.blockedUntil("user:u1")).toBeNull();
    // The three copies read back as one rounded id; each is reported under the id the file holds
    // (probe 53a F2's class: it was one report naming the rounded id, a row that does not exist).
    expect(tamperReports(target).map((report) => report.id)).toEqual([
      "1152921504606846977",
      "1152921504606846978",
      "1152921504606846979",
    ]);
  });

  test("thousands of forged rows: the first 100 reported one by one, then one count a minute, however often they are read or changed", async () => {
    const clock = new ManualClock();
    const target = app(clock);
    const sqlite = target.db.$client;
    const far = clock.now() + YEAR;
    sqlite.run(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
       INSERT INTO ip_blocks (address, reason, source, created_at, expires_at)
       SELECT '198.18.' || (i / 250) || '.' || (i % 250), 'forged', 'admin', 1, ${far} FROM n`,
    );
    const service = target.services.ipBlocks;
    expect(service.listActive()).toEqual([]);
    clock.advance(1_001);
    expect(service.blockedUntil("198.18.0.1")).toBeNull();
    sqlite.run("UPDATE ip_blocks SET reason = reason || '.'");
    expect(service.listActive()).toEqual([]);
    clock.advance(1_001);
    expect(service.blockedUntil("198.18.0.2")).toBeNull();
    const details = () => tamperReports(target) as { table: string; id?: string; more?: number }[];
    const summaries = () => details().filter((detail) => detail.more !== undefined);
    expect(details().filter((detail) => detail.id !== undefined)).toHaveLength(100);
    // Read four times, changed once: counted once.
    expect(summaries()).toEqual([{ table: "ip_blocks", more: 1400 }]);
    // New rows are counted, and said at most once a minute.
    sqlite.run(
      `INSERT INTO ip_blocks (address, reason, source, created_at, expires_at)
       VALUES ('198.18.9.1', 'forged', 'admin', 1, ${far}), ('198.18.9.2', 'forged', 'admin', 1, ${far})`,
    );
    expect(service.listActive()).toEqual([]);
    expect(summaries()).toHaveLength(1);
    clock.advance(60_000);
    sqlite.run(
      `INSERT INTO ip_blocks (address, reason, source, created_at, expires_at)
       VALUES ('198.18.9.3', 'forged', 'admin', 1, ${far})`,
    );
    expect(service.listActive()).toEqual([]);
    expect(summaries()).toEqual([
      { table: "ip_blocks", more: 1400 },
      { table: "ip_blocks", more: 3 },
    ]);
    const lines = target.logs.entries.filter((entry) => entry.level === "error");
    expect(lines).toHaveLength(102);
  });

  test("a forged row whose end is not a time is never in force and is pruned", () => {
    const clock = new ManualClock();
    const target = app(clock);
    const sqlite = target.db.$client;
    for (const end of ["'never'", "9e999", "x'00'"]) {
      sqlite.run(
        `INSERT INTO ip_blocks (address, reason, source, created_at, expires_at)
         VALUES ('192.0.2.30', 'forged', 'admin', 1, ${end})`,
      );
    }
    const service = target.services.ipBlocks;
    expect(service.blockedUntil("192.0.2.30")).toBeNull();
    expect(service.listActive()).toEqual([]);
    expect(service.prune(clock.now())).toBe(3);
    expect(rows(target)).toEqual([]);
  });
});

describe("what Palisade writes stays sealed", () => {
  test("blocks, lockouts, lifts, and an erasure naming the pseudonym are all sealed; nothing is reported", async () => {
    const clock = new ManualClock();
    const target = app(clock, true);
    const admin = await signUp(target, { role: "admin" });
    const bob = await signUp(target);
    const headers = bearer(admin.accessToken);
    const made = await send(target, "/api/admin/blocks", {
      headers,
      body: { address: "192.0.2.50", ttlMinutes: 30, reason: "stuffing" },
    });
    expect(made.status).toBe(201);
    const kept = await send(target, "/api/admin/blocks", {
      headers,
      body: { address: "192.0.2.51", ttlMinutes: 30, reason: "stuffing" },
    });
    const { id } = (await made.json()) as { id: number };
    expect(
      (await send(target, `/api/admin/blocks/${id}`, { method: "DELETE", headers })).status,
    ).toBe(204);
    // A lockout and an automatic address block, as the limiter's refusals make them.
    for (let i = 0; i < 5; i++) {
      await target.services.ipBlocks.recordPrincipalViolation(`user:${bob.userId}`);
    }
    const { parseIp } = await import("../../src/plugins/client-ip/address");
    const client = { ip: "203.0.113.50", key: "203.0.113.50", address: parseIp("203.0.113.50") };
    for (let i = 0; i < 10; i++) await target.services.ipBlocks.recordViolation("login", client);
    expect(rows(target).map((row) => [row.address, row.source])).toEqual([
      ["192.0.2.50", "admin"],
      ["192.0.2.51", "admin"],
      ["203.0.113.50", "auto"],
      [`user:${bob.userId}`, "auto"],
    ]);
    expect(everyRowSealed(target)).toBe(true);
    expect(rows(target).find((row) => row.id === id)!.liftedAt).toBe(clock.now());

    const erased = await send(target, "/api/me", {
      method: "DELETE",
      headers,
    });
    expect(erased.status).toBe(204);
    const byAdmin = rows(target).filter((row) => row.source === "admin");
    expect(byAdmin).toHaveLength(2);
    expect(byAdmin.every((row) => row.createdBy?.startsWith("erased:"))).toBe(true);
    expect(everyRowSealed(target)).toBe(true);
    clock.advance(1_001);
    // The block made by the erased admin is still in force, as sealed as before.
    const { id: keptId } = (await kept.json()) as { id: number };
    expect(rows(target).some((row) => row.id === keptId && row.liftedAt === null)).toBe(true);
    expect((await send(target, "/openapi.json", { peer: "192.0.2.51" })).status).toBe(403);
    expect(tamperReports(target)).toEqual([]);
  });

  test("an erasure takes the person's id off a tampered row too, and leaves it unsealed", async () => {
    const clock = new ManualClock();
    const target = app(clock, true);
    const admin = await signUp(target, { role: "admin" });
    const block = target.services.ipBlocks.block({
      address: "192.0.2.60",
      reason: "r",
      ttlMs: 15 * MINUTE,
      source: "admin",
      createdBy: `user:${admin.userId}`,
    });
    target.db.$client.run("UPDATE ip_blocks SET reason = 'changed' WHERE id = ?", [block.id]);
    const erased = await send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(admin.accessToken),
    });
    expect(erased.status).toBe(204);
    const [row] = rows(target);
    expect(row!.createdBy).toStartWith("erased:");
    expect(createBlockSeal(target.config.audit.secretKey).intact(row!)).toBe(false);
  });
});

function databaseBeforeBlockSeals() {
  const dir = tempDir();
  cleanups.push(dir.remove);
  const path = `${dir.path}/old.db`;
  const db = openDatabase(path);
  applyMigrationsFrom(db, migrationsUpTo(dir.path, 20));
  db.$client.run(
    `INSERT INTO ip_blocks (address, reason, source, created_by, created_at, expires_at)
     VALUES ('192.0.2.77', 'stuffing', 'admin', 'cli', 1, 4102444800000)`,
  );
  return { path, db };
}

/**
 * `db:migrate` on a file put back before 0021 with one block in it: the block is sealed again, and
 * said and audited as a second sealing (with 0022's, which ran again after it).
 */
async function expectSealedAgain(path: string, env: Record<string, string>) {
  const again = await cliInProcess(["db:migrate"], env);
  expect(again.code).toBe(0);
  expect(again.stderr).toContain(
    "the database file was sealed by this release before (1 earlier ip.blocks_sealed in its audit log)",
  );
  const reopened = openDatabase(path);
  cleanups.push(() => reopened.$client.close());
  const resealed = reopened.$client
    .query<{ detail: string }, []>("SELECT detail FROM audit_events WHERE type = 'db.resealed'")
    .all();
  expect(resealed.map((row) => JSON.parse(row.detail))).toEqual([
    { kind: "ip.blocks_sealed", earlier: 1, blocks: 1 },
    { kind: "auth.lineages_sealed", earlier: 1, keys: 0, rotated: 0 },
    { kind: "auth.successors_sealed", earlier: 1, keys: 0, rotated: 0, actingForUsers: 0 },
    { kind: "payment.undecided_sealed", earlier: 1, payments: 0 },
    { kind: "whatsapp.outbox_offsets_sealed", earlier: 1, replies: 0 },
  ]);
}

describe("upgrading a database stored before block seals", () => {
  test("a file that held no block at its first upgrade, put back with a forged lockout, is sealed again and said as tampering", async () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const path = `${dir.path}/empty.db`;
    const db = openDatabase(path);
    applyMigrationsFrom(db, migrationsUpTo(dir.path, 20));
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC" };
    const first = await cliInProcess(["db:migrate"], env);
    expect(first.code).toBe(0);
    // Nothing to seal, nothing said; recorded all the same.
    expect(first.stderr).toBe("");
    const file = openDatabase(path);
    expect(
      file.$client.query("SELECT detail FROM audit_events WHERE type = 'ip.blocks_sealed'").all(),
    ).toEqual([{ detail: JSON.stringify({ blocks: 0 }) }]);
    putBackBefore(file.$client, 21);
    file.$client.run(
      `INSERT INTO ip_blocks (address, reason, source, created_at, expires_at)
       VALUES ('user:admin', 'forged year', 'auto', 1, 4102444800000)`,
    );
    file.$client.close();
    await expectSealedAgain(path, env);
  });

  test("the migration seals the blocks there, in its transaction; only it does", () => {
    const { db } = databaseBeforeBlockSeals();
    cleanups.push(() => db.$client.close());
    const seal = createBlockSeal("a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC");
    const sealing = blockSealing(seal);
    const applied = applyMigrations(db, sealing.companions).appliedNow;
    expect(applied).toEqual(migrationTagsFrom(21));
    expect(applied[0]).toBe(BLOCK_SEALS_MIGRATION);
    expect(sealing.sealed()).toEqual({ blocks: 1 });
    const stored = () =>
      db.$client
        .query<StoredRow, []>(`SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks ORDER BY id`)
        .all();
    expect(stored().map((row) => seal.intact(row))).toEqual([true]);
    db.$client.run(
      `INSERT INTO ip_blocks (address, reason, source, created_at, expires_at)
       VALUES ('192.0.2.78', 'later', 'admin', 2, 4102444800000)`,
    );
    const later = blockSealing(seal);
    expect(applyMigrations(db, later.companions).appliedNow).toEqual([]);
    expect(later.sealed()).toBeNull();
    expect(stored().map((row) => seal.intact(row))).toEqual([true, false]);
  });

  test("db:migrate says and audits it, the block stays in force; a file put back is sealed, said and audited again", async () => {
    const { path, db } = databaseBeforeBlockSeals();
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC" };
    const first = await cliInProcess(["db:migrate"], env);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe(
      "sealed the 1 address blocks and lockouts stored before this release; block rows written into the file from now on block nothing",
    );
    const listed = await cliInProcess(["blocks:list"], env);
    expect(listed.stdout).toContain("192.0.2.77");
    const file = openDatabase(path);
    const sealedEvents = () =>
      file.$client
        .query("SELECT actor, detail FROM audit_events WHERE type = 'ip.blocks_sealed'")
        .all();
    expect(sealedEvents()).toEqual([{ actor: "system", detail: JSON.stringify({ blocks: 1 }) }]);
    putBackBefore(file.$client, 21);
    file.$client.close();
    await expectSealedAgain(path, env);
  });
});
