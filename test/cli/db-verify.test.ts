/**
 * `db:verify` and the backup's seal check: a file written only by Palisade verifies whole, and a
 * row of any sealed kind changed in the file is named (probe 30d F7: a tampered backup passed
 * `db:backup` and the documented restore check).
 */
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { COMMANDS } from "../../src/cli/commands";
import { runCli } from "../../src/cli/run";
import { READING_VERSION, storedReading } from "../../src/modules/auth/readings";
import { buildTestApp, NO_READINGS_QUIET, send, tempDir } from "../support/app";
import { bearer, signUp } from "../support/auth";
import { asUser, chat } from "../support/chat";
import { cliInProcess as cli } from "../support/cli";
import { startGraphServer } from "../support/graph-server";
import { whatsappOf } from "../support/outbox";
import { buildPaymentsApp, createIntent, type PaymentsApp } from "../support/payments";
import { deliver, notification, ScriptedChat, storedId, whatsappEnv } from "../support/whatsapp";

let cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const step of cleanups.reverse()) await step();
  cleanups = [];
});

/**
 * An app whose file holds every kind of sealed row, each written by the service as it runs: two
 * accounts, sessions (one refreshed, one ended), a rotated API key and its successor, a chat
 * conversation of two turns, a payment and its idempotency key, a WhatsApp reply sent and one
 * pending, and an address block.
 */
async function populated(): Promise<PaymentsApp> {
  const graph = startGraphServer();
  cleanups.push(() => graph.close());
  const scripted = new ScriptedChat();
  const target = buildPaymentsApp({
    env: whatsappEnv(graph),
    whatsapp: { chat: scripted },
  });
  cleanups.push(() => target.close());
  const admin = await signUp(target, { role: "admin" });
  const user = await signUp(target);
  const refreshed = await send(target, "/api/auth/refresh", {
    body: { refreshToken: user.refreshToken },
  });
  expect(refreshed.status).toBe(200);
  const ended = await send(target, "/api/auth/logout", {
    method: "POST",
    headers: bearer(admin.accessToken),
  });
  expect(ended.status).toBe(204);
  const adminAgain = await signUp(target, { role: "admin" });

  const created = await send(target, "/api/admin/api-keys", {
    headers: bearer(adminAgain.accessToken),
    body: { name: "support bot", scopes: ["chat"] },
  });
  expect(created.status).toBe(201);
  const { apiKey } = (await created.json()) as { apiKey: { id: string } };
  const rotated = await send(target, `/api/admin/api-keys/${apiKey.id}/rotate`, {
    headers: bearer(adminAgain.accessToken),
    body: {},
  });
  expect(rotated.status).toBe(201);

  const first = await chat(target, asUser(user), { message: "When are you open?" });
  expect(first.status).toBe(200);
  const { conversationId } = (await first.json()) as { conversationId: string };
  const second = await chat(target, asUser(user), { message: "And on Sunday?", conversationId });
  expect(second.status).toBe(200);

  const intent = await createIntent(target, bearer(user.accessToken), {
    amount: 1200,
    currency: "eur",
  });
  expect(intent.status).toBe(201);

  const sentReply = await deliver(
    target,
    notification({ messages: [{ id: "wamid.sent", from: "16505551234", text: "hi" }] }),
  );
  expect(sentReply.status).toBe(200);
  await whatsappOf(target.services).worker.drain();
  // A reply longer than Graph takes in one message: sent in parts, where the rest begins sealed
  // (probe 86a F1: the check left that column out and named every such row tampered).
  scripted.script.push({
    kind: "reply",
    turn: {
      conversationId: "conv-long",
      reply: "word ".repeat(2000),
      usage: { promptTokens: 3, completionTokens: 2500 },
    },
  });
  const longReply = await deliver(
    target,
    notification({ messages: [{ id: "wamid.long", from: "16505554321", text: "tell me" }] }),
  );
  expect(longReply.status).toBe(200);
  await whatsappOf(target.services).worker.drain();
  expect(graph.sent.length).toBeGreaterThan(2);
  const pendingReply = await deliver(
    target,
    notification({ messages: [{ id: "wamid.pending", from: "16505559876", text: "hello" }] }),
  );
  expect(pendingReply.status).toBe(200);

  const blocked = await send(target, "/api/admin/blocks", {
    headers: bearer(adminAgain.accessToken),
    body: { address: "203.0.113.9", ttlMinutes: 60, reason: "scraping" },
  });
  expect(blocked.status).toBe(201);
  return target;
}

const verify = (target: Pick<PaymentsApp, "databasePath">, args: string[] = []) =>
  cli(["db:verify", ...args], { DATABASE_PATH: target.databasePath });

/** An app whose registrations are not limited and whose readings are written again at once. */
function accountsApp() {
  const target = buildTestApp({
    env: { RATE_LIMIT_REGISTER: "1000" },
    readingsQuiet: NO_READINGS_QUIET,
  });
  cleanups.push(() => target.close());
  return target;
}

/**
 * `pay@d.example` and its Cyrillic look-alike, as registered before look-alikes were refused
 * (probe 90b F2) or while a release whose readings differ served the file (94g F1): the second
 * while the first's reading was not its address's, which the file then held again.
 */
async function lookAlikePair(target: ReturnType<typeof accountsApp>) {
  const latin = await signUp(target, { email: "pay@d.example" });
  tamper(
    target,
    `UPDATE users SET reading = '${READING_VERSION}:elsewhere' WHERE id = '${latin.userId}'`,
  );
  const cyrillic = await signUp(target, { email: "\u0440\u0430\u0443@d.example" });
  tamper(
    target,
    `UPDATE users SET reading = '${storedReading("pay@d.example")}' WHERE id = '${latin.userId}'`,
  );
  return { latin, cyrillic };
}

/** Runs `sql` on the file as someone with write access to it (and not the key) would. */
function tamper(target: Pick<PaymentsApp, "databasePath">, sql: string): void {
  const file = new Database(target.databasePath);
  try {
    file.run(sql);
  } finally {
    file.close();
  }
}

const one = <Row>(target: PaymentsApp, sql: string) => target.db.$client.query<Row, []>(sql).get()!;

describe("db:verify", () => {
  test("a file written only by Palisade verifies whole: integrity, audit chain, every seal", async () => {
    const target = await populated();
    const result = await verify(target);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const lines = result.stdout.split("\n");
    expect(lines[0]).toBe("integrity ok");
    expect(lines[1]).toMatch(/^schema as this release's \d+ migrations made it$/);
    expect(lines[2]).toMatch(
      /^audit chain intact: \d+ rows verified; head [0-9a-f]{64} count \d+$/,
    );
    expect(lines[3]).toMatch(/^seals intact: \d+ rows verified \(/);
    expect(lines[4]).toBe("no two accounts' addresses read alike");
    // Every kind was there to check: none of the counts is 0.
    const counts = Object.fromEntries(
      [...lines[3]!.matchAll(/(\w+) (\d+)/g)].map(([, table, n]) => [table, Number(n)]),
    );
    expect(counts).toEqual({
      users: 3,
      api_keys: 2,
      refresh_families: 3,
      refresh_tokens: 4,
      chat_conversations: 1,
      chat_messages: 4,
      payments: 1,
      payment_idempotency_keys: 1,
      whatsapp_outbox: 3,
      ip_blocks: 1,
    });
    // The sent reply was finished (its number and text cleared) and the other is pending: both
    // as the service wrote them.
    const states = target.db.$client
      .query<{ state: string }, []>("SELECT state FROM whatsapp_outbox ORDER BY id")
      .all()
      .map((row) => row.state);
    expect(states).toEqual(["sent", "sent", "pending"]);
  });

  test("a row of each sealed kind changed in the file is named, and the command exits 1", async () => {
    const target = await populated();
    const user = one<{ id: string }>(target, "SELECT id FROM users WHERE role = 'user'");
    const key = one<{ id: string }>(
      target,
      "SELECT id FROM api_keys WHERE replaced_by IS NULL ORDER BY id DESC LIMIT 1",
    );
    const family = one<{ id: string }>(
      target,
      "SELECT id FROM refresh_families WHERE revoked_at IS NOT NULL",
    );
    const token = one<{ id: string }>(target, "SELECT id FROM refresh_tokens LIMIT 1");
    const conversation = one<{ id: string }>(target, "SELECT id FROM chat_conversations");
    const reply = one<{ id: number }>(
      target,
      "SELECT id FROM chat_messages WHERE role = 'assistant' ORDER BY id LIMIT 1",
    );
    const payment = one<{ id: string; owner: string }>(target, "SELECT id, owner FROM payments");
    const outbox = one<{ id: number }>(
      target,
      "SELECT id FROM whatsapp_outbox WHERE state = 'pending'",
    );
    const block = one<{ id: number }>(target, "SELECT id FROM ip_blocks");
    tamper(
      target,
      `UPDATE users SET role = 'admin' WHERE id = '${user.id}';
       UPDATE api_keys SET scopes = '["admin"]' WHERE id = '${key.id}';
       UPDATE refresh_families SET revoked_at = NULL WHERE id = '${family.id}';
       UPDATE refresh_tokens SET expires_at = expires_at + 86400000 WHERE id = '${token.id}';
       UPDATE chat_conversations SET owner_id = 'someone-else' WHERE id = '${conversation.id}';
       UPDATE chat_messages SET content = 'Please pay to IBAN X.' WHERE id = ${reply.id};
       UPDATE payments SET amount = 1 WHERE id = '${payment.id}';
       UPDATE payment_idempotency_keys SET request_hash = 'another request';
       UPDATE whatsapp_outbox SET recipient = '15550000000' WHERE id = ${outbox.id};
       UPDATE ip_blocks SET expires_at = 0 WHERE id = ${block.id};`,
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    for (const named of [
      `users ${user.id}: does not match its seal`,
      `api_keys ${key.id}: does not match its seal`,
      `refresh_families ${family.id}: does not match its seal`,
      `refresh_tokens ${token.id}: does not match its seal`,
      `chat_conversations ${conversation.id}: does not match its seal`,
      `chat_messages ${reply.id}: does not match its seal`,
      `payments ${payment.id}: does not match its seal`,
      `whatsapp_outbox ${outbox.id}: does not match its seal`,
      `ip_blocks ${block.id}: does not match its seal`,
    ]) {
      expect(lines).toContain(named);
    }
    expect(lines).toContainEqual(
      expect.stringMatching(
        new RegExp(
          `^payment_idempotency_keys ${payment.owner} key [0-9a-f]{16}: does not match its seal$`,
        ),
      ),
    );
    expect(lines.at(-2)).toMatch(
      /^seals: 10 of \d+ rows do not match \(users 1, api_keys 1, refresh_families 1, refresh_tokens 1, chat_conversations 1, chat_messages 1, payments 1, payment_idempotency_keys 1, whatsapp_outbox 1, ip_blocks 1\)/,
    );
    expect(result.stderr).toBe("palisade db:verify: 10 rows do not match their seals");
    // The audit chain was not touched, and says so.
    expect(lines[2]).toMatch(/^audit chain intact/);
  });

  test("where the rest of a reply begins, written into the file, is named as the worker would refuse it (probe 86a F1)", async () => {
    const target = await populated();
    const sent = one<{ id: number }>(
      target,
      `SELECT id FROM whatsapp_outbox WHERE message_id = '${storedId(target, "wamid.sent")}'`,
    );
    tamper(target, `UPDATE whatsapp_outbox SET reply_sent_chars = 3 WHERE id = ${sent.id}`);
    const result = await verify(target);
    expect(result.code).toBe(1);
    expect(result.stdout.split("\n")).toContain(
      `whatsapp_outbox ${sent.id}: does not match its seal`,
    );
  });

  test("a key's lineage or rotation mark changed, and a message deleted from the middle of a conversation, are named for what failed", async () => {
    const target = await populated();
    const [older, newer] = target.db.$client
      .query<{ id: string }, []>("SELECT id FROM api_keys ORDER BY id")
      .all();
    const messages = target.db.$client
      .query<{ id: number }, []>("SELECT id FROM chat_messages ORDER BY id")
      .all();
    tamper(
      target,
      `UPDATE api_keys SET lineage = id WHERE id = '${newer!.id}';
       UPDATE api_keys SET replaced_by = NULL WHERE id = '${older!.id}';
       DELETE FROM chat_messages WHERE id = ${messages[1]!.id};`,
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    expect(lines).toContain(
      `api_keys ${newer!.id}: its lineage does not match its seal (the key works, but reaches no payments and cannot be rotated)`,
    );
    expect(lines).toContain(
      `api_keys ${older!.id}: its rotation mark does not match its seal (the key works, but cannot be rotated)`,
    );
    expect(lines).toContain(
      `chat_messages ${messages[2]!.id}: does not follow the message before it in its conversation (a message deleted, moved or put back)`,
    );
    expect(result.stderr).toBe("palisade db:verify: 3 rows do not match their seals");
  });

  test("a conversation's or a message's time, and a message's usage, that the file holds as none can be are named (probe 43b F1, F2)", async () => {
    const target = await populated();
    const conversation = one<{ id: string }>(target, "SELECT id FROM chat_conversations LIMIT 1");
    const [asked, answered] = target.db.$client
      .query<{ id: number }, []>("SELECT id FROM chat_messages ORDER BY id LIMIT 2")
      .all();
    tamper(
      target,
      `UPDATE chat_conversations SET created_at = 'yesterday' WHERE id = '${conversation.id}';
       UPDATE chat_messages SET created_at = 9e15 WHERE id = ${asked!.id};
       UPDATE chat_messages SET completion_tokens = -4 WHERE id = ${answered!.id};`,
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    expect(lines).toContain(
      `chat_conversations ${conversation.id}: holds a time that is none (text, a fraction, or out of range): the service reads it as tampered`,
    );
    expect(lines).toContain(
      `chat_messages ${asked!.id}: holds a time that is none (text, a fraction, or out of range): the service reads it as tampered`,
    );
    expect(lines).toContain(
      `chat_messages ${answered!.id}: holds a token count that is none: the service shows it as no usage`,
    );
    // Their seals hold: said as what they are, not as rows that do not match (probe 44a).
    expect(lines.at(-2)).toMatch(
      /^seals: 0 of \d+ rows do not match, 3 hold a time or count Palisade never writes \(chat_conversations 1, chat_messages 2\)/,
    );
    expect(result.stderr).toBe(
      "palisade db:verify: 3 rows hold a time or count Palisade never writes",
    );
  });

  test("an audit row changed fails the chain and the command, and the seals are still checked", async () => {
    const target = await populated();
    tamper(
      target,
      `UPDATE audit_events SET detail = '{"forged":true}'
       WHERE id = (SELECT min(id) + 1 FROM audit_events)`,
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    expect(lines[2]).toStartWith("audit chain: ");
    expect(lines[3]).toStartWith("seals intact: ");
    expect(result.stderr).toBe("palisade db:verify: the audit chain does not verify");
  });

  test("past 100 failures the rest are counted, not named; an id is cut and its controls spelt out", async () => {
    const target = await populated();
    const sqlite = new Database(target.databasePath);
    try {
      const insert = sqlite.prepare(
        `INSERT INTO ip_blocks (address, reason, source, created_at, expires_at, seal)
         VALUES (?, 'forged', 'manual', 0, 9999999999999, 'not-a-seal')`,
      );
      sqlite.transaction(() => {
        for (let i = 0; i < 150; i++) insert.run(`198.51.100.${i % 250}-${i}`);
      })();
      sqlite.run(
        `UPDATE users SET role = 'admin', id = '${"x".repeat(80)}\u001b[2J' WHERE role = 'user'`,
      );
    } finally {
      sqlite.close();
    }
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    expect(lines).toContain(`users ${"x".repeat(64)}…: does not match its seal`);
    expect(lines.filter((line) => line.startsWith("ip_blocks "))).toHaveLength(99);
    expect(lines).toContain("… and 51 more not named");
    expect(lines.at(-2)).toStartWith("seals: 151 of ");
    expect(result.stdout).not.toContain("\u001b");
  });

  test("accounts whose addresses read alike are named, each group on a line, and are no fault of the file", async () => {
    const target = accountsApp();
    const { latin, cyrillic } = await lookAlikePair(target);
    // And a pair of which one account's reading is another version's (not yet written again).
    const other = await signUp(target, { email: "ace@d.example" });
    tamper(
      target,
      `UPDATE users SET reading = '${READING_VERSION}:elsewhere' WHERE id = '${other.userId}'`,
    );
    const third = await signUp(target, { email: "\u0430\u0441\u0435@d.example" });
    tamper(target, `UPDATE users SET reading = NULL WHERE id = '${other.userId}'`);
    const result = await verify(target);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    const lines = result.stdout.split("\n");
    const said = (accounts: string) =>
      `look-alike accounts: ${accounts} read alike (registered before look-alikes were refused, while two releases served the file, or written into it): not a fault of the file; check one does not pass for the other`;
    expect(lines.filter((line) => line.startsWith("look-alike accounts: "))).toEqual([
      said(`pay@d.example (${latin.userId}), \u0440\u0430\u0443@d.example (${cyrillic.userId})`),
      said(`ace@d.example (${other.userId}), \u0430\u0441\u0435@d.example (${third.userId})`),
    ]);
    expect(lines).not.toContain("no two accounts' addresses read alike");
  });

  test("an account's reading changed in the file is a fault: named, exit 1 (registration no longer finds its look-alikes)", async () => {
    const target = accountsApp();
    const latin = await signUp(target, { email: "pay@d.example" });
    await signUp(target, { email: "someone@d.example" });
    tamper(
      target,
      `UPDATE users SET reading = '${READING_VERSION}:elsewhere' WHERE id = '${latin.userId}'`,
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("palisade db:verify: 1 account's reading is not its address's");
    const lines = result.stdout.split("\n");
    expect(lines).toContain(
      `users ${latin.userId}: its reading (look-alike address) is not its address's: changed in the file, and registration no longer finds its look-alikes; clear it (UPDATE users SET reading = NULL WHERE id = that id) and the service writes it again from the address within a minute`,
    );
    expect(lines.filter((line) => line.startsWith("users "))).toHaveLength(1);
    // Which it does: a look-alike registers now, and is refused once the reading is cleared and
    // written again by the service's upkeep.
    tamper(target, `UPDATE users SET reading = NULL WHERE id = '${latin.userId}'`);
    target.services.auth.keepReadings();
    await target.services.auth.readingsSettled();
    expect((await verify(target)).code).toBe(0);
  });

  test("what the readings check names is bounded, ordered by id, and read without the reading index (probe 96a F1, F4, F5, F6)", async () => {
    const target = accountsApp();
    const { latin, cyrillic } = await lookAlikePair(target);
    // The older account moved to the end of the file (its row's place, which no seal covers):
    // still named first, by its id (96a F4).
    tamper(target, `UPDATE users SET rowid = 1000000 WHERE id = '${latin.userId}'`);
    const insert = (id: string, email: string, reading: string | null) =>
      `INSERT INTO users (id, email, password_hash, role, created_at, updated_at, reading)
       VALUES ('${id}', '${email}', 'x', 'user', 0, 0, ${reading === null ? "NULL" : `'${reading}'`})`;
    // Twelve accounts of one address, written into the file with no reading: ten named (96a F1).
    for (let n = 0; n < 12; n++)
      tamper(target, insert(`z-${String(n).padStart(2, "0")}`, "same@d.example", null));
    // An id of 100,000 characters with a reading not its address's: named cut to 64; and ids as
    // long behind a NUL, and as a blob, cut too (probe 96b F1, F2: held and printed whole).
    tamper(target, insert(`long${"i".repeat(100_000)}`, "long@d.example", `${READING_VERSION}:x`));
    tamper(
      target,
      `INSERT INTO users (id, email, password_hash, role, created_at, updated_at, reading)
       VALUES ('nul' || char(0) || '${"n".repeat(100_000)}', 'nul@d.example', 'x', 'user', 0, 0, '${READING_VERSION}:x'),
              (CAST('${"b".repeat(100_000)}' AS BLOB), 'blob@d.example', 'x', 'user', 0, 0, '${READING_VERSION}:x')`,
    );
    // An address that reads as nothing, and the reading the service writes for it (96a F6).
    tamper(target, insert("no-address", "x".repeat(5_000), `${READING_VERSION}:`));
    // The reading index dropped: a schema fault, and the rest of the verdict given (96a F5).
    tamper(target, "DROP INDEX users_reading");
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    const readingFault = (id: string) =>
      `users ${id}: its reading (look-alike address) is not its address's: changed in the file, and registration no longer finds its look-alikes; clear it (UPDATE users SET reading = NULL WHERE id = that id) and the service writes it again from the address within a minute`;
    expect(
      lines.filter((line) => line.includes("its reading (look-alike address)")).sort(),
    ).toEqual(
      [
        readingFault(`long${"i".repeat(60)}…`),
        readingFault("nul…"),
        readingFault(`x'${"62".repeat(32)}'`),
      ].sort(),
    );
    const said = (accounts: string) =>
      `look-alike accounts: ${accounts} read alike (registered before look-alikes were refused, while two releases served the file, or written into it): not a fault of the file; check one does not pass for the other`;
    const same = Array.from(
      { length: 10 },
      (_, n) => `same@d.example (z-${String(n).padStart(2, "0")})`,
    );
    expect(lines.filter((line) => line.startsWith("look-alike accounts: "))).toEqual([
      said(`pay@d.example (${latin.userId}), \u0440\u0430\u0443@d.example (${cyrillic.userId})`),
      said(`${same.join(", ")} and 2 more`),
    ]);
    expect(result.stdout.length).toBeLessThan(20_000);
    expect(result.stderr).toStartWith(
      "palisade db:verify: its schema is not as the migrations made it;",
    );
    expect(result.stderr).toEndWith("; 3 accounts' readings are not their addresses'");
  });

  test("--head and --count are checked as audit:verify checks them", async () => {
    const target = await populated();
    const bad = await verify(target, ["--head", "nothex", "--count", "1"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--head must be the 64 hex characters");
    const head = one<{ hash: string; count: number }>(
      target,
      "SELECT hash, (SELECT count(*) FROM audit_events) AS count FROM audit_events ORDER BY id DESC LIMIT 1",
    );
    const anchored = await verify(target, ["--head", head.hash, "--count", String(head.count)]);
    expect(anchored.stderr).toBe("");
    expect(anchored.code).toBe(0);
    expect(anchored.stdout).toContain(`; anchor at row ${head.count} confirmed`);
  });
});

describe("db:verify reads and never writes (probe 31a F1)", () => {
  const migrationsAndAuditRows = (path: string) => {
    const file = new Database(path, { readonly: true });
    try {
      return file
        .query<{ migrations: number; audit: number }, []>(
          "SELECT (SELECT count(*) FROM __drizzle_migrations) AS migrations, (SELECT count(*) FROM audit_events) AS audit",
        )
        .get()!;
    } finally {
      file.close();
    }
  };

  test("a file whose newest migration is undone is refused, not migrated: nothing it holds gets sealed by the check", async () => {
    const target = await populated();
    target.services.audit.flush();
    tamper(
      target,
      `DELETE FROM __drizzle_migrations WHERE created_at = (SELECT max(created_at) FROM __drizzle_migrations);
       INSERT INTO ip_blocks (address, reason, source, created_at, expires_at)
       VALUES ('10.0.0.1', 'planted', 'manual', 0, 9999999999999)`,
    );
    const before = migrationsAndAuditRows(target.databasePath);
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    expect(lines[1]).toMatch(
      /^migrations: at \S+, (\d+) of this release's (\d+): a start of this release would migrate it, sealing as they stand the rows its newer migrations seal; verify it with the release that wrote it, or start this release on it only if the file has not been out of your hands$/,
    );
    expect(lines).toContain("seals not checked: the file is not in this release's shape");
    expect(result.stderr).toBe("palisade db:verify: the file is not at this release's migrations");
    // Nothing was written: no migration applied, no audit row, the planted row still unsealed.
    expect(migrationsAndAuditRows(target.databasePath)).toEqual(before);
    const planted = one<{ seal: string | null }>(
      target,
      "SELECT seal FROM ip_blocks WHERE reason = 'planted'",
    );
    expect(planted.seal).toBeNull();
  });

  test("a file that verifies is left byte for byte as it was", async () => {
    const target = await populated();
    target.services.audit.flush();
    target.db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
    const bytes = () =>
      new Bun.CryptoHasher("sha256").update(readFileSync(target.databasePath)).digest("hex");
    const before = bytes();
    expect((await verify(target)).code).toBe(0);
    expect(bytes()).toBe(before);
  });

  test("a backup's copy at rest is verified with nothing made beside it (no -wal, no -shm; probe 31c F1)", async () => {
    const target = await populated();
    const dir = tempDir("palisade-verify-");
    cleanups.push(dir.remove);
    const copy = join(dir.path, "copy.db");
    expect((await cli(["db:backup", copy], { DATABASE_PATH: target.databasePath })).code).toBe(0);
    // As a stopped service leaves its file: in WAL mode, its -wal and -shm removed at the close.
    const asLeft = new Database(copy);
    asLeft.run("PRAGMA journal_mode = WAL");
    asLeft.close();
    const before = readdirSync(dir.path).sort();
    expect(before.some((name) => name.endsWith("-wal") || name.endsWith("-shm"))).toBe(false);
    const result = await cli(["db:verify"], { DATABASE_PATH: copy });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(readdirSync(dir.path).sort()).toEqual(before);
  });

  test("a file at rest that a process writes to during the check gets no verdict (probe 31d F1)", async () => {
    const target = await populated();
    const dir = tempDir("palisade-verify-");
    cleanups.push(dir.remove);
    const copy = join(dir.path, "copy.db");
    expect((await cli(["db:backup", copy], { DATABASE_PATH: target.databasePath })).code).toBe(0);
    const out: string[] = [];
    const err: string[] = [];
    // Another process's write, once the check has begun (read without a lock, as a file at rest).
    const writeMeanwhile = (line: string) => {
      out.push(line);
      if (line !== "integrity ok") return;
      // Written, then its modification time set back, as `cp -p` or `touch -r` leave it (probe
      // 31e F4): the change time still moves.
      const times = join(dir.path, "times");
      writeFileSync(times, "");
      Bun.spawnSync(["touch", "-r", copy, times]);
      const writer = new Database(copy);
      // In place: the file keeps its size.
      writer.run("UPDATE users SET role = role");
      writer.close();
      Bun.spawnSync(["touch", "-r", times, copy]);
      expect(statSync(copy).mtimeMs).toBe(statSync(times).mtimeMs);
    };
    const code = await runCli(
      ["db:verify"],
      { DATABASE_PATH: copy },
      { out: writeMeanwhile, err: (line) => err.push(line), readStdin: async () => "" },
      COMMANDS,
    );
    expect(code).toBe(75);
    expect(err).toEqual([
      `palisade db:verify: DATABASE_PATH ${copy} changed while it was checked (a process wrote to it), so no verdict is given and the lines above say nothing of it: stop what writes to it, or verify a db:backup copy`,
    ]);
  });

  test("a file a writer left mid-write is refused with what to do, not recovered (probe 31c F1)", async () => {
    const target = await populated();
    const dir = tempDir("palisade-verify-");
    cleanups.push(dir.remove);
    const copy = join(dir.path, "copy.db");
    expect((await cli(["db:backup", copy], { DATABASE_PATH: target.databasePath })).code).toBe(0);
    // A writer in rollback-journal mode killed inside its transaction leaves a hot journal.
    const writer = Bun.spawn(
      [
        "bun",
        "-e",
        `const { Database } = require("bun:sqlite");
         const db = new Database(process.env.FILE);
         db.run("PRAGMA journal_mode=DELETE");
         db.run("BEGIN IMMEDIATE");
         db.run("CREATE TABLE filler (x)");
         db.run("PRAGMA cache_size = 10");
         for (let i = 0; i < 500; i++) db.run("INSERT INTO filler VALUES (randomblob(1000))");
         db.run("UPDATE users SET role = 'admin'");
         process.kill(process.pid, "SIGKILL");`,
      ],
      { env: { ...process.env, FILE: copy }, stdout: "ignore", stderr: "ignore" },
    );
    await writer.exited;
    expect(existsSync(`${copy}-journal`)).toBe(true);
    const result = await cli(["db:verify"], { DATABASE_PATH: copy });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `palisade db:verify: DATABASE_PATH ${copy} needs recovery from a write that was cut short, which a check that writes nothing cannot make: copy it with db:backup and verify the copy`,
    );
    expect(existsSync(`${copy}-journal`)).toBe(true);
  });

  test("a trigger in the file is named as not Palisade's, and fails the check", async () => {
    const target = await populated();
    tamper(
      target,
      "CREATE TRIGGER quiet_logins AFTER INSERT ON audit_events BEGIN DELETE FROM audit_events WHERE id = NEW.id; END",
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(
      "schema: trigger quiet_logins on audit_events is not Palisade's (a start drops it): CREATE TRIGGER quiet_logins",
    );
    expect(result.stderr).toBe("palisade db:verify: its schema is not as the migrations made it");
  });

  test("a table rebuilt so that a foreign key names no key: said, and the rest of the verdict given (probe 93e F6)", async () => {
    const target = await populated();
    tamper(
      target,
      `PRAGMA foreign_keys = OFF;
       CREATE TABLE rebuilt AS SELECT * FROM chat_conversations;
       DROP TABLE chat_conversations;
       ALTER TABLE rebuilt RENAME TO chat_conversations;`,
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain("foreign keys: not checked: ");
    expect(result.stdout).toMatch(/^audit chain intact: /m);
    expect(result.stderr).toBe("palisade db:verify: its schema is not as the migrations made it");
  });

  test("in development, a file without its audit key beside it is refused; no key is made", async () => {
    const target = await populated();
    const dir = tempDir("palisade-verify-");
    cleanups.push(dir.remove);
    const copy = join(dir.path, "copy.db");
    target.db.$client.run(`VACUUM INTO '${copy}'`);
    const result = await cli(["db:verify"], { DATABASE_PATH: copy });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `palisade db:verify: no audit key beside the file (${copy}.audit-key): copy there the key it was written with (a backup's PATH.audit-key), or set AUDIT_SECRET_KEY`,
    );
    expect(existsSync(`${copy}.audit-key`)).toBe(false);
  });

  test("rows whose integer ids the file moved past 2^53 are named by the ids it holds, not JavaScript's rounding (probe 53a F2's class)", async () => {
    const target = await populated();
    const reply = one<{ id: number }>(
      target,
      "SELECT id FROM chat_messages WHERE role = 'assistant' ORDER BY id LIMIT 1",
    );
    // 2^53 + 1, + 3 and + 5: read by JavaScript as 2^53, 2^53 + 4 and 2^53 + 4.
    tamper(
      target,
      `UPDATE chat_messages SET id = 9007199254740993 WHERE id = ${reply.id};
       UPDATE whatsapp_outbox SET id = 9007199254740995, recipient = '15550000000'
         WHERE state = 'pending';
       UPDATE ip_blocks SET id = 9007199254740997;`,
    );
    const result = await verify(target);
    expect(result.code).toBe(1);
    const lines = result.stdout.split("\n");
    expect(lines).toContain("chat_messages 9007199254740993: does not match its seal");
    expect(lines).toContain("whatsapp_outbox 9007199254740995: does not match its seal");
    expect(lines).toContain("ip_blocks 9007199254740997: does not match its seal");
  });

  test("a forged row whose id is a blob is named as SQL writes a blob", async () => {
    const target = await populated();
    tamper(target, "UPDATE users SET id = X'41424344' WHERE role = 'user'");
    const result = await verify(target);
    expect(result.code).toBe(1);
    expect(result.stdout.split("\n")).toContain("users x'41424344': does not match its seal");
    // The account's sessions and keys name it by its old id now: named too.
    expect(result.stderr).toBe(
      "palisade db:verify: 3 rows name rows not in the file; 1 row does not match its seal",
    );
  });
});

describe("db:backup's seal check", () => {
  test("a copy holding a tampered row is written, named on stderr, and exits 3", async () => {
    const target = await populated();
    const user = one<{ id: string }>(target, "SELECT id FROM users WHERE role = 'user'");
    tamper(target, `UPDATE users SET role = 'admin' WHERE id = '${user.id}'`);
    const dir = tempDir("palisade-verify-");
    cleanups.push(dir.remove);
    const copy = join(dir.path, "copy.db");
    const result = await cli(["db:backup", copy], { DATABASE_PATH: target.databasePath });
    expect(result.code).toBe(3);
    expect(existsSync(copy)).toBe(true);
    expect(result.stdout).toStartWith(
      `backup written to ${copy}: integrity ok, audit chain intact`,
    );
    expect(result.stdout).not.toContain("seals intact");
    expect(result.stderr.split("\n")).toEqual([
      `users ${user.id}: does not match its seal`,
      expect.stringMatching(/^seals: 1 of \d+ rows do not match \(users 1\)/),
      "the copy holds 1 row that does not match its seal, as DATABASE_PATH does: run db:verify on it",
    ]);
    // And the copy itself says the same.
    const again = await cli(["db:verify"], { DATABASE_PATH: copy });
    expect(again.code).toBe(1);
    expect(again.stdout).toContain(`users ${user.id}: does not match its seal`);
  });

  test("a copy holding an account's reading changed in the file, or readings that cannot be read, is written, said on stderr, exit 3; the readings of a copy that holds neither are said intact", async () => {
    const target = accountsApp();
    const latin = await signUp(target, { email: "pay@d.example" });
    await signUp(target, { email: "someone@d.example" });
    const dir = tempDir("palisade-verify-");
    cleanups.push(dir.remove);
    const before = join(dir.path, "before.db");
    const intact = await cli(["db:backup", before], { DATABASE_PATH: target.databasePath });
    expect({ code: intact.code, stderr: intact.stderr }).toEqual({ code: 0, stderr: "" });
    expect(intact.stdout).toContain(", seals intact, readings intact");
    // Unsealed: the seal sweep passes it, and the copy was said whole.
    tamper(
      target,
      `UPDATE users SET reading = '${READING_VERSION}:elsewhere' WHERE id = '${latin.userId}'`,
    );
    const copy = join(dir.path, "copy.db");
    const result = await cli(["db:backup", copy], { DATABASE_PATH: target.databasePath });
    expect(result.code).toBe(3);
    expect(existsSync(copy)).toBe(true);
    expect(result.stdout).toContain(", seals intact");
    expect(result.stdout).not.toContain("readings intact");
    expect(result.stderr.split("\n")).toEqual([
      `users ${latin.userId}: its reading (look-alike address) is not its address's: changed in the file, and registration no longer finds its look-alikes; clear it (UPDATE users SET reading = NULL WHERE id = that id) and the service writes it again from the address within a minute`,
      "in the copy, as in DATABASE_PATH, 1 account's reading is not its address's: run db:verify on it",
    ]);
    const again = await cli(["db:verify"], { DATABASE_PATH: copy });
    expect(again.code).toBe(1);
    expect(again.stderr).toBe("palisade db:verify: 1 account's reading is not its address's");

    // A users table whose readings cannot be read, which a start refuses: written, exit 3 too,
    // not 0 (probe 97a F1: a cron job counted it a good backup).
    tamper(target, "DROP INDEX users_reading; ALTER TABLE users DROP COLUMN reading");
    const unreadable = join(dir.path, "unreadable.db");
    const notChecked = await cli(["db:backup", unreadable], {
      DATABASE_PATH: target.databasePath,
    });
    expect(notChecked.code).toBe(3);
    expect(existsSync(unreadable)).toBe(true);
    expect(notChecked.stdout).not.toContain("readings intact");
    expect(notChecked.stderr.split("\n")).toEqual([
      "readings: not checked: no such column: reading",
      "the copy's readings could not be checked, as DATABASE_PATH's cannot: its users table is not in this release's shape; run db:verify on it",
    ]);
  });

  test("an untouched file's copy says its seals are intact and exits 0", async () => {
    const target = await populated();
    const dir = tempDir("palisade-verify-");
    cleanups.push(dir.remove);
    const copy = join(dir.path, "copy.db");
    const result = await cli(["db:backup", copy], { DATABASE_PATH: target.databasePath });
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(", seals intact");
  });
});
