/**
 * A turn's budget reservation and its storing are each written with the other turns' of the same
 * event-loop turn, in one transaction, a savepoint each (db/grouped-writes): each is still
 * decided, stored, chained and charged as if alone, one whose write fails loses only itself, and
 * an answer is given only once its turn is there for every reader.
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import {
  chatConversations,
  chatMessages,
  chatReservations,
  chatUsage,
} from "../../../src/db/schema";
import { loadFaq } from "../../../src/modules/chat/providers/faq";
import { createOfflineProvider } from "../../../src/modules/chat/providers/offline";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { type Session, signUp } from "../../support/auth";
import { asUser, chat, gatedProvider, parseSse, SSE } from "../../support/chat";
import { waitFor } from "../../support/wait";

const RAISED = { RATE_LIMIT_CHAT: "1000", RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" };

let target: TestApp | undefined;
afterEach(() => {
  target?.close();
  target = undefined;
});

interface Reply {
  conversationId: string;
  reply: string;
}

async function conversationOf(app: TestApp, session: Session, id: string) {
  const response = await send(app, `/api/chat/conversations/${id}`, {
    method: "GET",
    headers: asUser(session),
  });
  return {
    status: response.status,
    body: (await response.json()) as { messages?: { role: string; content: string }[] },
  };
}

for (const raise of ["ABORT", "ROLLBACK"] as const)
  test(`turns ending together: each is stored and charged, and one whose storing fails loses only itself (RAISE(${raise}))`, async () => {
    const provider = gatedProvider();
    target = buildTestApp({ chatProvider: provider, env: RAISED });
    const app = target;
    const [alice, bob, carol] = [await signUp(app), await signUp(app), await signUp(app)];
    // Someone with the file refuses one message: that turn's storing fails inside the shared
    // transaction, after the turn before it in the same transaction has written its rows.
    app.db.$client.run(
      `CREATE TRIGGER refuse_poison BEFORE INSERT ON chat_messages WHEN NEW.content = 'poison'
     BEGIN SELECT RAISE(${raise}, 'refused by a trigger'); END`,
    );
    const turns = [
      chat(app, asUser(alice), { message: "How do I sign up?" }),
      chat(app, asUser(bob), { message: "poison" }),
      chat(app, asUser(carol), { message: "How do I pay?" }),
    ];
    await waitFor(() => provider.waiting() === 3);
    provider.open();
    const [aliceTurn, bobTurn, carolTurn] = await Promise.all(turns);

    expect(aliceTurn!.status).toBe(200);
    expect(carolTurn!.status).toBe(200);
    expect(bobTurn!.status).toBe(500);
    expect(((await bobTurn!.json()) as { code: string }).code).toBe("INTERNAL");
    const aliceReply = (await aliceTurn!.json()) as Reply;
    const carolReply = (await carolTurn!.json()) as Reply;

    // Alice's and Carol's turns are there, whole; nothing of Bob's is.
    for (const [session, reply, message] of [
      [alice, aliceReply, "How do I sign up?"],
      [carol, carolReply, "How do I pay?"],
    ] as const) {
      const stored = await conversationOf(app, session, reply.conversationId);
      expect(stored.status).toBe(200);
      expect(stored.body.messages).toMatchObject([
        { role: "user", content: message },
        { role: "assistant", content: reply.reply },
      ]);
    }
    const owners = app.db
      .select({ owner: chatConversations.ownerId })
      .from(chatConversations)
      .all()
      .map((row) => row.owner)
      .sort();
    expect(owners).toEqual([alice.userId, carol.userId].sort());
    expect(app.db.select().from(chatMessages).all()).toHaveLength(4);

    // Every reservation left `reserved`; the failed turn is charged too (the upstream billed it).
    const usage = app.db.select().from(chatUsage).all();
    expect(usage).toHaveLength(3);
    for (const row of usage) {
      expect(row.reservedTokens).toBe(0);
      expect(row.usedTokens).toBeGreaterThan(0);
    }
  });

test("two turns of one conversation at once are both stored, the second chained to the first", async () => {
  target = buildTestApp({ env: RAISED });
  const app = target;
  const alice = await signUp(app);
  const first = (await (
    await chat(app, asUser(alice), { message: "How do I sign up?" })
  ).json()) as Reply;
  const again = await Promise.all([
    chat(app, asUser(alice), { message: "and payments?", conversationId: first.conversationId }),
    chat(app, asUser(alice), { message: "and refunds?", conversationId: first.conversationId }),
  ]);
  expect(again.map((response) => response.status)).toEqual([200, 200]);
  const stored = await conversationOf(app, alice, first.conversationId);
  // Read back through the seal check: a message not chained to the one before it would make the
  // conversation unreadable (404).
  expect(stored.status).toBe(200);
  expect(stored.body.messages?.map((message) => message.role)).toEqual([
    "user",
    "assistant",
    "user",
    "assistant",
    "user",
    "assistant",
  ]);
  expect(
    stored.body.messages
      ?.filter((message) => message.role === "user")
      .map((message) => message.content)
      .sort(),
  ).toEqual(["How do I sign up?", "and payments?", "and refunds?"]);
});

test("an answer is given only once its turn is committed: another connection reads it then", async () => {
  target = buildTestApp({ env: RAISED });
  const app = target;
  const alice = await signUp(app);
  const reader = new Database(app.databasePath, { readonly: true });
  try {
    const answers = await Promise.all(
      Array.from({ length: 4 }, (_, index) =>
        chat(app, asUser(alice), { message: `question ${index}` }).then(async (response) => {
          const reply = (await response.json()) as Reply;
          // Read by another connection at the moment the answer arrives.
          const seen = reader
            .query<{ n: number }, [string]>(
              "SELECT count(*) AS n FROM chat_messages WHERE conversation_id = ?",
            )
            .get(reply.conversationId)!.n;
          return { status: response.status, seen };
        }),
      ),
    );
    expect(answers).toEqual(Array.from({ length: 4 }, () => ({ status: 200, seen: 2 })));
  } finally {
    reader.close();
  }
});

// 40 characters: 10 tokens; "zzz yyyyyy": 3. A new conversation's turn is estimated at 13, and
// reserves that plus the provider's completion cap.
const SYSTEM_PROMPT = "S".repeat(40);
const MESSAGE = "zzz yyyyyy";
const RESERVED = 13 + createOfflineProvider(loadFaq(null)).maxCompletionTokens;

test("turns prepared together are reserved one after another: with room for two, of three at once two are answered", async () => {
  target = buildTestApp({
    env: {
      ...RAISED,
      CHAT_SYSTEM_PROMPT: SYSTEM_PROMPT,
      CHAT_DAILY_TOKEN_BUDGET: String(RESERVED * 2 + RESERVED - 1),
    },
  });
  const app = target;
  const alice = await signUp(app);
  const statuses = (
    await Promise.all(
      Array.from({ length: 3 }, () => chat(app, asUser(alice), { message: MESSAGE })),
    )
  ).map((response) => response.status);
  expect(statuses.sort()).toEqual([200, 200, 429]);
  const [usage] = app.db.select().from(chatUsage).all();
  expect(usage!.reservedTokens).toBe(0);
  expect(usage!.requests).toBe(2);
  expect(app.db.select().from(chatMessages).all()).toHaveLength(4);
});

test("a reservation whose writing fails fails only its own turn; the turns reserved with it go on", async () => {
  target = buildTestApp({ env: RAISED });
  const app = target;
  const [alice, bob, carol] = [await signUp(app), await signUp(app), await signUp(app)];
  app.db.$client.run(
    `CREATE TRIGGER refuse_bob BEFORE INSERT ON chat_reservations WHEN NEW.owner_id = '${bob.userId}'
     BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END`,
  );
  const [aliceTurn, bobTurn, carolTurn] = await Promise.all(
    [alice, bob, carol].map((session) => chat(app, asUser(session), { message: "How do I pay?" })),
  );
  expect([aliceTurn!.status, bobTurn!.status, carolTurn!.status]).toEqual([200, 500, 200]);
  const usage = app.db.select().from(chatUsage).all();
  // Bob's usage row was made in his savepoint and went with it; nothing of his is reserved.
  expect(usage.map((row) => row.ownerId).sort()).toEqual([alice.userId, carol.userId].sort());
  for (const row of usage) expect(row.reservedTokens).toBe(0);
  expect(app.db.select().from(chatMessages).all()).toHaveLength(4);
});

/** How many transaction statements (BEGIN, COMMIT, SAVEPOINT, …) the app's connection has run. */
async function transactionStatements(app: TestApp): Promise<number> {
  const text = await (await send(app, "/metrics")).text();
  const counts = [
    ...text.matchAll(/^db_query_duration_seconds_count\{operation="transaction"[^}]*\} (\d+)$/gm),
  ];
  return counts.reduce((sum, match) => sum + Number(match[1]), 0);
}

/** Another connection holding the file's write lock until `release` is called. */
function holdWriteLock(app: TestApp) {
  const locker = new Database(app.databasePath);
  locker.run("BEGIN IMMEDIATE");
  return () => {
    locker.run("ROLLBACK");
    locker.close();
  };
}

test("turns a lock fails together try for it together, and their reservations come back at the next maintenance run", async () => {
  const provider = gatedProvider();
  target = buildTestApp({
    chatProvider: provider,
    env: { ...RAISED, CHAT_DAILY_TOKEN_BUDGET: "1000000" },
    // A lock that stays past the turn: nothing to wait out.
    chatStoreLockWaitMs: 0,
  });
  const app = target;
  const alice = await signUp(app);
  const TURNS = 12;
  const turns = Array.from({ length: TURNS }, () =>
    chat(app, asUser(alice), { message: "How do I sign up?" }),
  );
  await waitFor(() => provider.waiting() === TURNS);
  expect(app.db.select().from(chatReservations).all()).toHaveLength(TURNS);
  const before = await transactionStatements(app);
  app.db.$client.run("PRAGMA busy_timeout = 0");
  const release = holdWriteLock(app);
  provider.open();
  const answers = await Promise.all(turns);
  release();
  for (const answer of answers) {
    expect(answer.status).toBe(503);
    expect(((await answer.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
  }
  // Each turn alone would have tried the lock twice (its storing, then its settling): 24 waits
  // on the event loop. Together: the group's storing once, the group's settling once, and the
  // metrics request's own limiter decision.
  expect((await transactionStatements(app)) - before).toBeLessThanOrEqual(4);
  expect(app.db.select().from(chatMessages).all()).toEqual([]);
  const logged = app.logs.entries.filter(
    (line) => line.msg === "chat turn not stored: the database is locked",
  );
  expect(logged).toHaveLength(TURNS);

  // The reservations could be neither settled nor given back under the lock: the next maintenance
  // run gives them back, and the day's budget is whole again.
  expect(app.db.select().from(chatUsage).get()!.reservedTokens).toBeGreaterThan(0);
  app.services.runMaintenance();
  expect(app.db.select().from(chatReservations).all()).toEqual([]);
  expect(app.db.select().from(chatUsage).get()!.reservedTokens).toBe(0);
});

test("a turn whose storing meets another connection's lock waits it out: answered 200 and stored once, the upstream asked once (probe 28d F2)", async () => {
  for (const accept of [{}, SSE]) {
    const provider = gatedProvider();
    const app = buildTestApp({ chatProvider: provider, env: RAISED });
    try {
      const alice = await signUp(app);
      const turn = chat(app, asUser(alice), { message: "How do I sign up?" }, accept);
      // Reserved, and the upstream asked: the lock comes between its answer and the storing.
      await waitFor(() => provider.waiting() === 1);
      const release = holdWriteLock(app);
      provider.open();
      // Longer than the connection's own 50 ms wait, well within the store's.
      await Bun.sleep(400);
      release();
      const response = await turn;
      expect(response.status).toBe(200);
      expect(await response.text()).not.toContain("SERVICE_UNAVAILABLE");
      expect(provider.waiting()).toBe(1);
      expect(app.db.select().from(chatMessages).all()).toHaveLength(2);
      expect(
        app.logs.entries.filter((line) => String(line.msg).startsWith("chat turn not stored")),
      ).toEqual([]);
    } finally {
      app.close();
    }
  }
});

test("a streamed turn whose storing meets a lock ends with the 503 a whole answer gets, and says it was not stored", async () => {
  const provider = gatedProvider();
  target = buildTestApp({ chatProvider: provider, env: RAISED, chatStoreLockWaitMs: 0 });
  const app = target;
  const alice = await signUp(app);
  const streamed = chat(app, asUser(alice), { message: "How do I sign up?" }, SSE);
  await waitFor(() => provider.waiting() === 1);
  app.db.$client.run("PRAGMA busy_timeout = 0");
  const release = holdWriteLock(app);
  provider.open();
  const response = await streamed;
  expect(response.status).toBe(200);
  const events = parseSse(await response.text());
  release();
  expect(events[0]!.event).toBe("message");
  expect(events.at(-1)).toMatchObject({
    event: "error",
    data: { code: "SERVICE_UNAVAILABLE", status: 503 },
  });
  expect(app.db.select().from(chatMessages).all()).toEqual([]);
  expect(
    app.logs.entries.filter((line) => line.msg === "chat turn not stored: the database is locked"),
  ).toHaveLength(1);
});
