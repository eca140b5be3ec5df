/**
 * Rows someone who can write the database file put there, whose ids JavaScript reads back as other
 * values (text that is no UTF-8 reads as U+FFFD, an integer past 2^53 rounded): an erasure, an
 * export or a retention run that chose rows by the ids it read back deleted or found nothing and
 * asked again for ever (probe 60b F1, F2, F3), and so did an erasure whose deleted rows a trigger
 * wrote again (probe 60c F7). Each now ends, and does what it is for.
 */
import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, serveInProcess, type TestApp } from "../../support/app";
import { signUp } from "../../support/auth";
import { asUser, chat } from "../../support/chat";
import { ManualClock } from "../../support/clock";

let target: TestApp | undefined;
afterEach(() => target?.close());

const env = {
  RATE_LIMIT_CHAT: "1000",
  RATE_LIMIT_PER_MINUTE: "1000",
  RATE_LIMIT_BURST: "1000",
  RATE_LIMIT_PRIVACY: "1000",
  CHAT_RETENTION_DAYS: "30",
};
const DAY = 86_400_000;

/** The answer, or "no answer" after `ms`. */
function within<T>(pending: Promise<T>, ms: number): Promise<T | "no answer"> {
  return Promise.race([pending, Bun.sleep(ms).then(() => "no answer" as const)]);
}

async function userWithConversation(app: TestApp) {
  const alice = await signUp(app);
  const first = await chat(app, asUser(alice), { message: "How do I sign up?" });
  expect(first.status).toBe(200);
  const { conversationId } = (await first.json()) as { conversationId: string };
  return { alice, conversationId };
}

/** The ids of the conversations `GET /api/me/export` holds, over HTTP, once it has all come. */
async function exportedConversations(app: TestApp, user: Parameters<typeof asUser>[0]) {
  const server = serveInProcess(app);
  try {
    const exported = await within(
      fetch(new URL("/api/me/export", server.url), { headers: asUser(user) }).then(
        async (response) => ({ status: response.status, body: await response.text() }),
      ),
      10_000,
    );
    expect(exported).not.toBe("no answer");
    if (exported === "no answer") return null;
    expect(exported.status).toBe(200);
    const document = JSON.parse(exported.body) as { chat: { conversations: { id: string }[] } };
    return document.chat.conversations.map((conversation) => conversation.id);
  } finally {
    await server.shutdown("test");
  }
}

const count = (app: TestApp, query: string, ...params: string[]) =>
  (app.db.$client.query(query).get(...params) as { n: number }).n;

test("an erasure ends whatever ids the user's chat rows were written under: a conversation id that is no UTF-8, 1,001 messages past 2^53", async () => {
  target = buildTestApp({ env });
  const { alice, conversationId } = await userWithConversation(target);
  target.db.$client.run(
    `INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, message_count, seal)
     VALUES (CAST(X'FF' AS TEXT), 'user', ?1, 0, 0, 0, 'x')`,
    [alice.userId],
  );
  target.db.$client.run(
    `WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < 1000)
     INSERT INTO chat_messages (id, conversation_id, role, content, incomplete, tokens, created_at, seal)
     SELECT 9007199254740993 + 2 * k, ?1, 'user', 'forged', 0, 2, 0, 'x' FROM n`,
    [conversationId],
  );
  const erased = await within(
    send(target, "/api/me", { method: "DELETE", headers: asUser(alice) }),
    10_000,
  );
  expect(erased === "no answer" ? erased : erased.status).toBe(204);
  expect(count(target, "SELECT count(*) AS n FROM chat_conversations")).toBe(0);
  expect(count(target, "SELECT count(*) AS n FROM chat_messages")).toBe(0);
  expect(target.services.auth.findUser(alice.userId)).toBeNull();
}, 20_000);

test("an erasure whose parts ahead of it can delete nothing (a trigger written into the file) stops them with a line and answers", async () => {
  target = buildTestApp({ env });
  const { alice, conversationId } = await userWithConversation(target);
  target.db.$client.run(
    `WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < 1000)
     INSERT INTO chat_messages (conversation_id, role, content, incomplete, tokens, created_at, seal)
     SELECT ?1, 'user', 'filler', 0, 2, 0, 'x' FROM n`,
    [conversationId],
  );
  target.db.$client.run(
    "CREATE TRIGGER keep_messages BEFORE DELETE ON chat_messages BEGIN SELECT RAISE(IGNORE); END",
  );
  const erased = await within(
    send(target, "/api/me", { method: "DELETE", headers: asUser(alice) }),
    10_000,
  );
  expect(erased).not.toBe("no answer");
  expect(target.logs.text).toContain("an erasure's parts ahead of it stopped");
  expect(target.logs.text).toContain("deleted none of the chat rows it chose");
}, 20_000);

test("an erasure whose parts ahead of it see the rows they delete come back (a trigger written into the file) stops them with a line and answers", async () => {
  target = buildTestApp({ env });
  const { alice } = await userWithConversation(target);
  // Each conversation deleted is written again under a longer id: every part deletes its 1,000
  // rows, and as many are there after it (probe 60c F7: DELETE /api/me never answered).
  target.db.$client.run(
    `CREATE TRIGGER conversations_come_back AFTER DELETE ON chat_conversations BEGIN
       INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, message_count, seal)
       VALUES (old.id || 'x', old.owner_kind, old.owner_id, old.created_at, old.updated_at, 0, 'x');
     END`,
  );
  const erased = await within(
    send(target, "/api/me", { method: "DELETE", headers: asUser(alice) }),
    10_000,
  );
  expect(erased === "no answer" ? erased : erased.status).toBe(204);
  expect(target.services.auth.findUser(alice.userId)).toBeNull();
  expect(target.logs.text).toContain("an erasure's parts ahead of it stopped");
  expect(target.logs.text).toContain("rows keep coming back");
}, 20_000);

test("an export ends through 500 conversations written under ids that are no UTF-8, and leaves them out", async () => {
  target = buildTestApp({ env });
  const { alice, conversationId } = await userWithConversation(target);
  const sqlite = target.db.$client;
  // All at one time, the last read back as U+FFFD: a full page whose last id, read back, named a
  // place before every one of them.
  sqlite.run(
    `WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 499)
     INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, message_count, seal)
     SELECT CAST(X'F1' || CAST(printf('%04d', k) AS BLOB) AS TEXT), 'user', ?1, 5, 5, 0, 'x' FROM n`,
    [alice.userId],
  );
  sqlite.run(
    `INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, message_count, seal)
     VALUES (CAST(X'FF' AS TEXT), 'user', ?1, 5, 5, 0, 'x')`,
    [alice.userId],
  );
  expect(await exportedConversations(target, alice)).toEqual([conversationId]);
}, 20_000);

test("a conversation whose id the file holds as a BLOB is left out of an export that comes whole, and reported as tampered (probe 82g F1)", async () => {
  target = buildTestApp({ env });
  const { alice, conversationId } = await userWithConversation(target);
  const second = await chat(target, asUser(alice), { message: "And to log in?" });
  const kept = ((await second.json()) as { conversationId: string }).conversationId;
  // The same bytes, stored as a BLOB rather than text, by a tool that enforces no foreign keys
  // (the sqlite3 shell's default): its messages still name the text.
  const sqlite = target.db.$client;
  sqlite.run("PRAGMA foreign_keys = OFF");
  sqlite.run("UPDATE chat_conversations SET id = CAST(id AS BLOB) WHERE id = ?", [conversationId]);
  sqlite.run("PRAGMA foreign_keys = ON");
  expect(await exportedConversations(target, alice)).toEqual([kept]);
  // Every time: it was cut after its 200 at each try.
  expect(await exportedConversations(target, alice)).toEqual([kept]);
  target.services.audit.flush();
  expect(
    count(
      target,
      "SELECT count(*) AS n FROM audit_events WHERE type = 'chat.conversation_tampered'",
    ),
  ).toBeGreaterThan(0);
  expect(target.logs.text).toContain(
    `x'${Buffer.from(conversationId).toString("hex").slice(0, 20)}`,
  );
}, 30_000);

test("retention goes on past old messages written under ids JavaScript reads otherwise: every user's expired messages go, and those too", async () => {
  const clock = new ManualClock();
  target = buildTestApp({ env, clock });
  await userWithConversation(target);
  const sqlite = target.db.$client;
  sqlite.run(
    `INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, message_count, seal)
     VALUES (CAST(X'FF' AS TEXT), 'user', 'nobody', 0, 0, 0, 'x')`,
  );
  sqlite.run(
    `WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < 999)
     INSERT INTO chat_messages (conversation_id, role, content, incomplete, tokens, created_at, seal)
     SELECT CAST(X'FF' AS TEXT), 'user', 'x', 0, 1, k, 'x' FROM n`,
  );
  sqlite.run(
    `WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < 999)
     INSERT INTO chat_messages (id, conversation_id, role, content, incomplete, tokens, created_at, seal)
     SELECT 9007199254740993 + 2 * k, CAST(X'FF' AS TEXT), 'user', 'x', 0, 1, 1000 + k, 'x' FROM n`,
  );
  clock.advance(40 * DAY);
  for (let run = 0; run < 4; run++) target.services.privacy.retain(clock.now());
  expect(count(target, "SELECT count(*) AS n FROM chat_messages")).toBe(0);
});
