/**
 * The conversation routes: list (newest first, cursor pagination), one with its messages, delete;
 * and isolation: another principal's conversation is 404 exactly like one that does not exist, on
 * GET, DELETE and as POST /api/chat's conversationId — including between a user and the user's
 * own API key. Malformed ids are 404 too (one answer for every id that is not yours).
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { applyMigrations } from "../../../src/db/migrate";
import { chatConversations, chatMessages } from "../../../src/db/schema";
import type { ChatFeature } from "../../../src/modules/chat/feature";
import {
  MESSAGE_COUNTS_MIGRATION,
  RECOUNT_AFTER_MIGRATION_MS,
} from "../../../src/modules/chat/feature";
import { buildTestApp, send, servicesTold, type TestApp } from "../../support/app";
import { createKey, type Session, signUp } from "../../support/auth";
import { asKey, asUser, chat, conversation } from "../../support/chat";
import { ManualClock } from "../../support/clock";
import { putBackBefore } from "../../support/migrations";
import { waitFor } from "../../support/wait";

let target: TestApp;
let clock: ManualClock;
let alice: Session;
let bob: Session;

beforeEach(async () => {
  clock = new ManualClock();
  target = buildTestApp({ clock });
  alice = await signUp(target);
  bob = await signUp(target);
});
afterEach(() => target.close());

async function start(credential: Record<string, string>, message = "hello"): Promise<string> {
  const response = await chat(target, credential, { message });
  expect(response.status).toBe(200);
  return ((await response.json()) as { conversationId: string }).conversationId;
}

const converse = (credential: Record<string, string>, turns: number) =>
  conversation(target, clock, credential, turns);

interface MessagePage {
  messageCount: number;
  messages: { role: string; content: string }[];
  nextCursor: string | null;
}

async function readPage(credential: Record<string, string>, id: string, query: string) {
  const response = await send(target, `/api/chat/conversations/${id}${query}`, {
    headers: credential,
  });
  expect(response.status).toBe(200);
  return (await response.json()) as MessagePage;
}

interface Page {
  conversations: { id: string; createdAt: string; updatedAt: string; messageCount: number }[];
  nextCursor: string | null;
}

/** Every conversation the list shows, read one a page to its end; `label` names a failing status. */
async function listedOneByOne(
  credential: Record<string, string>,
  label = "",
): Promise<Page["conversations"]> {
  const shown: Page["conversations"] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    // A list that gives the same page forever fails here, not by the test's timeout.
    expect([label, ++pages]).not.toEqual([label, 100]);
    const response = await send(
      target,
      `/api/chat/conversations?limit=1${cursor ? `&cursor=${cursor}` : ""}`,
      { headers: credential },
    );
    expect([label, response.status]).toEqual([label, 200]);
    const page = (await response.json()) as Page;
    shown.push(...page.conversations);
    cursor = page.nextCursor;
  } while (cursor !== null);
  return shown;
}

describe("list, read, delete", () => {
  test("a conversation shows its messages in order, with usage on the replies", async () => {
    const id = await start(asUser(alice), "How do I sign up?");
    clock.advance(1000);
    await chat(target, asUser(alice), { message: "and rate limits?", conversationId: id });
    const response = await send(target, `/api/chat/conversations/${id}`, {
      headers: asUser(alice),
    });
    expect(response.status).toBe(200);
    const conversation = (await response.json()) as {
      id: string;
      messageCount: number;
      updatedAt: string;
      messages: { role: string; content: string; incomplete: boolean; usage: unknown }[];
    };
    expect(conversation.id).toBe(id);
    expect(conversation.messageCount).toBe(4);
    expect(conversation.updatedAt).toBe(new Date(clock.now()).toISOString());
    expect(conversation.messages.map((m) => [m.role, m.content.slice(0, 16)])).toEqual([
      ["user", "How do I sign up"],
      ["assistant", "Create an accoun"],
      ["user", "and rate limits?"],
      ["assistant", "Chat allows 20 r"],
    ]);
    expect(conversation.messages[0]!.usage).toBeNull();
    expect(conversation.messages[1]!.usage).toMatchObject({ promptTokens: expect.any(Number) });
    // The list counts the same messages (it answered 0 for every conversation).
    const other = await start(asUser(alice), "just one question");
    const list = (await (
      await send(target, "/api/chat/conversations", { headers: asUser(alice) })
    ).json()) as Page;
    const counts = new Map(list.conversations.map((c) => [c.id, c.messageCount]));
    expect(counts.get(id)).toBe(4);
    expect(counts.get(other)).toBe(2);
  });

  test("pages newest first with nextCursor until null, each conversation once", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      ids.push(await start(asUser(alice), `zzz ${i}`));
      // Two share a millisecond: the id breaks the tie, nothing is skipped or repeated.
      if (i !== 3) clock.advance(10);
    }
    await start(asUser(bob));
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: string = cursor ? `?limit=3&cursor=${cursor}` : "?limit=3";
      const response = await send(target, `/api/chat/conversations${query}`, {
        headers: asUser(alice),
      });
      expect(response.status).toBe(200);
      const page = (await response.json()) as Page;
      expect(page.conversations.length).toBeLessThanOrEqual(3);
      seen.push(...page.conversations.map((c) => c.id));
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== null);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(7);
    expect(new Set(seen)).toEqual(new Set(ids));
    // Newest first: creation times never increase down the list.
    const rows = target.db.select().from(chatConversations).all();
    const created = new Map(rows.map((r) => [r.id, r.createdAt]));
    for (let i = 1; i < seen.length; i++) {
      expect(created.get(seen[i]!)!).toBeLessThanOrEqual(created.get(seen[i - 1]!)!);
    }
    expect(seen[0]).toBe(ids[6]);
  });

  test("a cursor this API did not give, or a bad limit, is 422 naming the parameter", async () => {
    for (const [query, field] of [
      ["?cursor=not-a-cursor", "query/cursor"],
      [`?cursor=${Buffer.from("1.").toString("base64url")}`, "query/cursor"],
      [`?cursor=${Buffer.from("x'--.1").toString("base64url")}`, "query/cursor"],
      ["?limit=1.5", "query/limit"],
      ["?limit=0", "query/limit"],
      ["?limit=101", "query/limit"],
    ] as const) {
      const response = await send(target, `/api/chat/conversations${query}`, {
        headers: asUser(alice),
      });
      expect(response.status).toBe(422);
      const problem = (await response.json()) as { code: string; errors: { field: string }[] };
      expect(problem.code).toBe("VALIDATION_FAILED");
      expect(problem.errors[0]!.field).toBe(field);
    }
  });

  test("a conversation's messages page back from the newest: oldest first on each page, nextCursor until null, each message once", async () => {
    const id = await converse(asUser(alice), 7);
    const pages: string[][] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor ? `?limit=4&cursor=${cursor}` : "?limit=4";
      const page = await readPage(asUser(alice), id, query);
      expect(page.messageCount).toBe(14);
      pages.push(page.messages.map((m) => m.content));
      cursor = page.nextCursor;
    } while (cursor !== null);
    expect(pages.map((page) => page.length)).toEqual([4, 4, 4, 2]);
    // The first page holds the newest; read back to front, the pages are the history in order.
    expect(pages[0]!.at(-1)).toStartWith("I am Palisade's built-in FAQ assistant");
    expect(pages[0]!.at(-2)).toBe("turn 6");
    const history = pages.toReversed().flat();
    expect(history.filter((_, i) => i % 2 === 0)).toEqual(
      Array.from({ length: 7 }, (_, i) => `turn ${i}`),
    );
  });

  test("without a limit a page holds the newest 50 messages, and the next the rest", async () => {
    const id = await converse(asUser(alice), 26);
    const first = await readPage(asUser(alice), id, "");
    expect(first.messages).toHaveLength(50);
    expect(first.messages[0]!.content).toBe("turn 1");
    expect(first.nextCursor).not.toBeNull();
    const second = await readPage(asUser(alice), id, `?cursor=${first.nextCursor}`);
    expect(second.messages.map((m) => m.content.slice(0, 6))).toEqual(["turn 0", "I am P"]);
    expect(second.nextCursor).toBeNull();
    expect(second.messageCount).toBe(52);
  });

  test("a bad cursor or limit on a conversation's page is 422 naming the parameter; another's conversation with a good cursor is 404", async () => {
    const id = await converse(asUser(alice), 3);
    const listCursor = Buffer.from(`${clock.now()}.${id}`).toString("base64url");
    for (const [query, field] of [
      ["?cursor=not-a-cursor", "query/cursor"],
      [`?cursor=${listCursor}`, "query/cursor"],
      [`?cursor=${Buffer.from("1.-1").toString("base64url")}`, "query/cursor"],
      // Another spelling of an id, and one past what JavaScript reads exactly.
      [`?cursor=${Buffer.from("m007").toString("base64url")}`, "query/cursor"],
      [`?cursor=${Buffer.from("m7").toString("base64url")}==`, "query/cursor"],
      [`?cursor=${Buffer.from("m7").toString("base64url")}.`, "query/cursor"],
      [`?cursor=${Buffer.from("m9007199254740993").toString("base64url")}`, "query/cursor"],
      ["?limit=0", "query/limit"],
      ["?limit=101", "query/limit"],
      ["?limit=2&limit=3", "query/limit"],
    ] as const) {
      const response = await send(target, `/api/chat/conversations/${id}${query}`, {
        headers: asUser(alice),
      });
      expect([query, response.status]).toEqual([query, 422]);
      const problem = (await response.json()) as { code: string; errors: { field: string }[] };
      expect(problem.code).toBe("VALIDATION_FAILED");
      expect(problem.errors[0]!.field).toBe(field);
    }
    const { nextCursor } = await readPage(asUser(alice), id, "?limit=2");
    const bobs = await send(target, `/api/chat/conversations/${id}?limit=2&cursor=${nextCursor}`, {
      headers: asUser(bob),
    });
    expect(bobs.status).toBe(404);
  });

  test("message ids of 16 digits page like any other, and a cursor names only the id (a time changed in the file does not spoil it)", async () => {
    // As far as a file's id sequence can go before a turn refuses to write (db/id-sequence).
    target.db.$client.run(
      "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('chat_messages', 9007199254740000)",
    );
    const id = await converse(asUser(alice), 3);
    const first = await readPage(asUser(alice), id, "?limit=2");
    target.db.$client.run("UPDATE chat_messages SET created_at = -1 WHERE conversation_id = ?", [
      id,
    ]);
    const second = await readPage(asUser(alice), id, `?limit=2&cursor=${first.nextCursor}`);
    const third = await readPage(asUser(alice), id, `?limit=2&cursor=${second.nextCursor}`);
    expect([...third.messages, ...second.messages].map((m) => m.content.slice(0, 6))).toEqual([
      "turn 0",
      "I am P",
      "turn 1",
      "I am P",
    ]);
    expect(third.nextCursor).toBeNull();
  });

  test("a message id sequence set past 2^53 refuses the turn, stores nothing and names the sequence as the file holds it (probe 52a F3's class)", async () => {
    target.db.$client.run(
      "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('chat_messages', 9007199254740993)",
    );
    const response = await chat(target, asUser(alice), { message: "hello" });
    expect(response.status).toBe(500);
    expect(target.db.$client.query("SELECT count(*) AS n FROM chat_messages").get()).toEqual({
      n: 0,
    });
    // Not 9007199254740992, as JavaScript reads the number.
    expect(target.logs.text).toContain(
      "the chat messages' id sequence (sqlite_sequence) is 9007199254740993, past any id Palisade writes",
    );
  });

  test("a message row written past 2^53 with the sequence low is named as what spends the ids (probe 58e F1)", async () => {
    await converse(asUser(alice), 1);
    target.db.$client.run(
      "UPDATE chat_messages SET id = 9007199254740993 WHERE id = (SELECT max(id) FROM chat_messages)",
    );
    target.db.$client.run("UPDATE sqlite_sequence SET seq = 3 WHERE name = 'chat_messages'");
    // A new conversation: the moved row's own fails its seal, and reads as not found.
    const response = await chat(target, asUser(bob), { message: "hello" });
    expect(response.status).toBe(500);
    expect(target.logs.text).toContain(
      "the chat messages' largest id is 9007199254740993, past any id Palisade writes: a row was written there",
    );
  });

  test("a sequence written as a text that is not a number is read as SQLite reads it, 0: turns go on (probe 58f F3)", async () => {
    target.db.$client.run(
      "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('chat_messages', 'abc')",
    );
    expect((await chat(target, asUser(alice), { message: "hello" })).status).toBe(200);
  });

  test("migration 0025 counts the messages of conversations stored before it", async () => {
    const long = await converse(asUser(alice), 3);
    const short = await start(asUser(bob));
    // As the release before it left the file: no count column.
    putBackBefore(target.db.$client, 25);
    applyMigrations(target.db);
    const counts = target.db
      .select({ id: chatConversations.id, messageCount: chatConversations.messageCount })
      .from(chatConversations)
      .all();
    expect(new Map(counts.map((c) => [c.id, c.messageCount]))).toEqual(
      new Map([
        [long, 6],
        [short, 2],
      ]),
    );
    // And kept from then on.
    await chat(target, asUser(bob), { message: "again", conversationId: short });
    expect((await readPage(asUser(bob), short, "")).messageCount).toBe(4);
  });

  test("a count written into the file that no count can be (negative, fractional, text) is counted instead; the list and the page answer", async () => {
    const id = await converse(asUser(alice), 2);
    const other = await start(asUser(alice));
    for (const written of [-5, 1.5, "abc", new Uint8Array([1])]) {
      target.db.$client.run("UPDATE chat_conversations SET message_count = ? WHERE id = ?", [
        written,
        id,
      ]);
      const list = await send(target, "/api/chat/conversations", { headers: asUser(alice) });
      expect([String(written), list.status]).toEqual([String(written), 200]);
      const counts = ((await list.json()) as Page).conversations.map((c) => [c.id, c.messageCount]);
      expect(new Map(counts as [string, number][])).toEqual(
        new Map([
          [id, 4],
          [other, 2],
        ]),
      );
      expect((await readPage(asUser(alice), id, "")).messageCount).toBe(4);
    }
    expect((await readPage(asUser(alice), other, "")).messageCount).toBe(2);
    // A turn moves the count on from the messages counted, not from what the cell held (text plus
    // two is two), and fails on none of them (NULL plus two is NULL, which the column refuses:
    // the same branch as text, which a typed test can write).
    for (const written of ["abc", -5, 1.5]) {
      target.db.$client.run("UPDATE chat_conversations SET message_count = ? WHERE id = ?", [
        written,
        id,
      ]);
      const before = (await readPage(asUser(alice), id, "?limit=1")).messageCount;
      const turn = await chat(target, asUser(alice), { message: "more", conversationId: id });
      expect([written, turn.status]).toEqual([written, 200]);
      const stored = target.db
        .select({ messageCount: chatConversations.messageCount })
        .from(chatConversations)
        .where(eq(chatConversations.id, id))
        .get();
      expect(stored).toEqual({ messageCount: before + 2 });
    }
  });

  // What no time can be: text, a BLOB, a fraction, past Date's last day either way, 2^63-1, and
  // the years Date holds that a date-time cannot write (10000, -1; probe 44a).
  const NOT_TIMES = [
    "abc",
    new Uint8Array([1]),
    1.5,
    9_000_000_000_000_000,
    -9_000_000_000_000_000,
    2n ** 63n - 1n,
    Date.UTC(10000, 0, 1),
    Date.UTC(-1, 11, 31),
  ];

  test("a conversation whose time the file holds as no time can be reads as tampered: left out of the list, which pages on past it, its page 404, still deleted; the others answer (probes 42b F3, 43b F1)", async () => {
    for (const column of ["created_at", "updated_at"]) {
      for (const written of NOT_TIMES) {
        // A minute on each time: the chat limit is 20 turns a minute.
        clock.advance(60_000);
        const broken = await start(asUser(alice));
        clock.advance(1000);
        const older = await start(asUser(alice));
        clock.advance(1000);
        const newest = await start(asUser(alice));
        clock.advance(1000);
        target.db.$client.run(`UPDATE chat_conversations SET ${column} = ? WHERE id = ?`, [
          written,
          broken,
        ]);
        const label = `${column} = ${String(written)}`;
        const shown = (await listedOneByOne(asUser(alice), label)).map((c) => c.id);
        expect([label, shown]).toEqual([label, [newest, older]]);
        const page = await send(target, `/api/chat/conversations/${broken}`, {
          headers: asUser(alice),
        });
        expect([label, page.status]).toEqual([label, 404]);
        const turn = await chat(target, asUser(alice), { message: "more", conversationId: broken });
        expect([label, turn.status]).toEqual([label, 404]);
        const deleted = await send(target, `/api/chat/conversations/${broken}`, {
          method: "DELETE",
          headers: asUser(alice),
        });
        expect([label, deleted.status]).toEqual([label, 204]);
        for (const other of [older, newest]) {
          await send(target, `/api/chat/conversations/${other}`, {
            method: "DELETE",
            headers: asUser(alice),
          });
        }
      }
    }
  });

  test("conversations the file gives ids no cursor can hold (longer, empty, a BLOB) are left out, and the list pages on past them (probe 47a F1)", async () => {
    const older = await start(asUser(alice));
    clock.advance(1000);
    const newer = await start(asUser(alice));
    const at = clock.now();
    const forge = target.db.$client.prepare(
      "INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, seal) VALUES (?, 'user', ?, ?, ?, 'x')",
    );
    // At the real conversations' own times, and after them: too long, empty, a BLOB, a NUL that
    // SQLite's length() stops at (48a F2), a byte that is no UTF-8 (read back as U+FFFD).
    const nulInside = `a\u0000${"x".repeat(299)}`;
    for (const id of ["x".repeat(300), "", new Uint8Array([0]), nulInside]) {
      forge.run(id, alice.userId, at, at);
      forge.run(
        id instanceof Uint8Array ? new Uint8Array([1]) : `${id}y`,
        alice.userId,
        at + 5,
        at + 5,
      );
    }
    for (const [bytes, time] of [
      ["80", at],
      ["8081", at + 5],
    ] as const) {
      target.db.$client.run(
        `INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, seal) VALUES (CAST(X'${bytes}' AS TEXT), 'user', ?, ?, ?, 'x')`,
        [alice.userId, time, time],
      );
    }
    expect((await listedOneByOne(asUser(alice))).map((c) => c.id)).toEqual([newer, older]);
  });

  test("conversations the file dates before 1970 are listed, and the list pages on past them", async () => {
    const earliest = await start(asUser(alice));
    const early = await start(asUser(alice));
    const later = await start(asUser(alice));
    const date = (id: string, at: number) =>
      target.db.$client.run("UPDATE chat_conversations SET created_at = ? WHERE id = ?", [at, id]);
    date(earliest, -10);
    date(early, -5);
    const shown = (await listedOneByOne(asUser(alice))).map((c) => [c.id, c.createdAt]);
    expect(shown).toEqual([
      [later, expect.any(String)],
      [early, "1969-12-31T23:59:59.995Z"],
      [earliest, "1969-12-31T23:59:59.990Z"],
    ]);
  });

  test("a message whose time the file holds as no time can be makes its page 404, never 500; a usage no count can be is shown as none (probe 43b F1, F2)", async () => {
    const id = await converse(asUser(alice), 2);
    const messageIds = () =>
      target.db
        .select({ id: chatMessages.id })
        .from(chatMessages)
        .where(eq(chatMessages.conversationId, id))
        .all()
        .map((row) => row.id);
    const [, firstReply, , lastReply] = messageIds();
    for (const written of ["abc", -3, 1.5, new Uint8Array([1])]) {
      target.db.$client.run(
        "UPDATE chat_messages SET prompt_tokens = ?, completion_tokens = 7 WHERE id = ?",
        [written, lastReply!],
      );
      const page = await readPage(asUser(alice), id, "");
      const usage = (page.messages as unknown as { usage: unknown }[]).map((m) => m.usage);
      expect([String(written), usage[3]]).toEqual([String(written), null]);
      expect(usage[1]).toEqual({
        promptTokens: expect.any(Number),
        completionTokens: expect.any(Number),
      });
    }
    for (const written of NOT_TIMES) {
      target.db.$client.run("UPDATE chat_messages SET created_at = ? WHERE id = ?", [
        written,
        firstReply!,
      ]);
      const page = await send(target, `/api/chat/conversations/${id}`, {
        headers: asUser(alice),
      });
      expect([String(written), page.status]).toEqual([String(written), 404]);
    }
    // The list shows no message: it still shows the conversation.
    const list = await send(target, "/api/chat/conversations", { headers: asUser(alice) });
    expect(((await list.json()) as Page).conversations.map((c) => c.id)).toEqual([id]);
  });

  test("the start that applied migration 0025 counts every conversation again two minutes later, once: what a process of the older release stored or deleted meanwhile", async () => {
    const id = await converse(asUser(alice), 2);
    const other = await start(asUser(bob));
    const { services, logs } = servicesTold(target, {
      clock,
      migratedNow: [MESSAGE_COUNTS_MIGRATION],
    });
    // An older process's turn (not counted) and its retention (nothing taken off).
    const setCount = (conversation: string, count: number) =>
      target.db.$client.run("UPDATE chat_conversations SET message_count = ? WHERE id = ?", [
        count,
        conversation,
      ]);
    setCount(id, 2);
    setCount(other, 7);
    services.runMaintenance();
    expect((await readPage(asUser(alice), id, "")).messageCount).toBe(2);
    clock.advance(RECOUNT_AFTER_MIGRATION_MS);
    services.runMaintenance();
    expect((await readPage(asUser(alice), id, "")).messageCount).toBe(4);
    expect((await readPage(asUser(bob), other, "")).messageCount).toBe(2);
    expect(logs.entries.filter((entry) => entry.level === "warn")).toEqual([
      expect.objectContaining({
        conversations: 2,
        msg: "chat message counts corrected after the upgrade: turns stored or messages deleted by a process of the older release",
      }),
    ]);
    // Once.
    setCount(id, 9);
    clock.advance(RECOUNT_AFTER_MIGRATION_MS);
    services.runMaintenance();
    expect((await readPage(asUser(alice), id, "")).messageCount).toBe(9);
    // A start that applied nothing counts nothing again.
    const later = servicesTold(target, { clock });
    clock.advance(RECOUNT_AFTER_MIGRATION_MS);
    later.services.runMaintenance();
    expect((await readPage(asUser(alice), id, "")).messageCount).toBe(9);
    later.services.close();
    services.close();
  });

  test("delete removes the conversation and its messages; a second delete is 404", async () => {
    const id = await start(asUser(alice));
    const other = await start(asUser(alice));
    const deleted = await send(target, `/api/chat/conversations/${id}`, {
      method: "DELETE",
      headers: asUser(alice),
    });
    expect(deleted.status).toBe(204);
    const remaining = target.db.select().from(chatMessages).all();
    expect(remaining.every((m) => m.conversationId === other)).toBe(true);
    expect(remaining).toHaveLength(2);
    const again = await send(target, `/api/chat/conversations/${id}`, {
      method: "DELETE",
      headers: asUser(alice),
    });
    expect(again.status).toBe(404);
  });
});

describe("deleting a long conversation (probe 84h F2)", () => {
  test("its messages go the oldest first, a part at a time: between two parts what is left still reads, sealed; then all of it is gone", async () => {
    const id = await conversation(target, clock, asUser(alice), 600);
    const countLeft = () =>
      target.db.select().from(chatMessages).where(eq(chatMessages.conversationId, id)).all().length;
    expect(countLeft()).toBe(1_200);
    const deleting = send(target, `/api/chat/conversations/${id}`, {
      method: "DELETE",
      headers: asUser(alice),
    });
    // One statement took all 1,200 at once, holding the event loop and the write lock for it.
    // What the conversation's page reads between two parts, read at once (the route's own call):
    // a request sent then raced the 20 ms pause and lost it on a loaded machine.
    const chatService = (target.services.features.find((f) => f.name === "chat") as ChatFeature)
      .service;
    let between: { messageCount: number } | null = null;
    await waitFor(
      () => {
        const left = countLeft();
        if (left === 0 || left === 1_200) return false;
        between = chatService.page({ kind: "user", id: alice.userId }, id, { limit: 50 });
        return true;
      },
      { what: "a part of the messages deleted, the rest still there", intervalMs: 1 },
    );
    expect(between).toMatchObject({ messageCount: 200 });
    expect((await deleting).status).toBe(204);
    expect(countLeft()).toBe(0);
    target.services.audit.flush();
    expect(
      target.db.$client
        .query("SELECT count(*) AS n FROM audit_events WHERE type = 'chat.conversation_tampered'")
        .get(),
    ).toEqual({ n: 0 });
    const again = await send(target, `/api/chat/conversations/${id}`, {
      method: "DELETE",
      headers: asUser(alice),
    });
    expect(again.status).toBe(404);
  }, 60_000);
});

describe("isolation: another's conversation is 404, never 403", () => {
  const notFound = async (response: Response) => {
    expect(response.status).toBe(404);
    return ((await response.json()) as { code: string; detail: string }).detail;
  };

  test("GET, DELETE and POST with another user's id answer exactly as for an unknown id", async () => {
    const id = await start(asUser(alice));
    const unknownId = "AAAAAAAAAAAAAAAAAAAAAA";
    for (const conversationId of [id, unknownId]) {
      const get = await send(target, `/api/chat/conversations/${conversationId}`, {
        headers: asUser(bob),
      });
      const del = await send(target, `/api/chat/conversations/${conversationId}`, {
        method: "DELETE",
        headers: asUser(bob),
      });
      const post = await chat(target, asUser(bob), { message: "hi", conversationId });
      const details = [await notFound(get), await notFound(del), await notFound(post)];
      expect(details[0]).toBe("No conversation of yours has that id.");
      expect(new Set(details).size).toBe(1);
    }
    // Alice's conversation is untouched, and Bob's list does not show it.
    expect(target.db.select().from(chatMessages).all()).toHaveLength(2);
    const list = (await (
      await send(target, "/api/chat/conversations", { headers: asUser(bob) })
    ).json()) as Page;
    expect(list.conversations).toEqual([]);
  });

  test("a user and the user's own API key do not see each other's conversations", async () => {
    const { key } = createKey(target, ["chat"], alice.userId);
    const mine = await start(asUser(alice));
    const keys = await start(asKey(key));
    expect(
      (await send(target, `/api/chat/conversations/${keys}`, { headers: asUser(alice) })).status,
    ).toBe(404);
    expect(
      (await send(target, `/api/chat/conversations/${mine}`, { headers: asKey(key) })).status,
    ).toBe(404);
    expect((await chat(target, asKey(key), { message: "x", conversationId: mine })).status).toBe(
      404,
    );
    const listed = (await (
      await send(target, "/api/chat/conversations", { headers: asKey(key) })
    ).json()) as Page;
    expect(listed.conversations.map((c) => c.id)).toEqual([keys]);
  });

  test("malformed ids are 404 on every route (never 422, never 500)", async () => {
    for (const id of ["x", "%27%20OR%201%3D1", "a".repeat(300), "..%2F", "null"]) {
      const get = await send(target, `/api/chat/conversations/${id}`, { headers: asUser(alice) });
      expect([id, get.status]).toEqual([id, id === "..%2F" ? 400 : 404]);
      const del = await send(target, `/api/chat/conversations/${id}`, {
        method: "DELETE",
        headers: asUser(alice),
      });
      expect(del.status).toBe(id === "..%2F" ? 400 : 404);
    }
    const post = await chat(target, asUser(alice), { message: "hi", conversationId: "' OR 1=1" });
    expect(post.status).toBe(404);
    const empty = await chat(target, asUser(alice), { message: "hi", conversationId: "" });
    expect(empty.status).toBe(404);
  });

  test("replies and histories are JSON, never HTML, whatever the text holds", async () => {
    const id = await start(asUser(alice), "<script>alert(1)</script>");
    const response = await send(target, `/api/chat/conversations/${id}`, {
      headers: asUser(alice),
    });
    expect(response.headers.get("content-type")).toStartWith("application/json");
    const conversation = (await response.json()) as { messages: { content: string }[] };
    expect(conversation.messages[0]!.content).toBe("<script>alert(1)</script>");
  });
});

describe("a page's size (probe 89f F1)", () => {
  test("a page holds as many of the newest messages as fit in a million characters as written, the newest always, and the cursor goes on to the rest", async () => {
    // Replies of control characters, six characters each as the answer writes them.
    const reply = "\u0001".repeat(60_000);
    const provider = {
      name: "offline",
      maxCompletionTokens: 100,
      complete: async () => ({ text: reply, usage: { promptTokens: 5, completionTokens: 5 } }),
      async *stream() {
        yield { text: reply };
        yield { usage: { promptTokens: 5, completionTokens: 5 } };
      },
    };
    const big = buildTestApp({ clock, chatProvider: provider as never });
    try {
      const carol = await signUp(big);
      const credential = asUser(carol);
      let id: string | undefined;
      for (let turn = 0; turn < 6; turn++) {
        const response = await chat(big, credential, {
          message: `turn ${turn}`,
          ...(id ? { conversationId: id } : {}),
        });
        expect(response.status).toBe(200);
        id = ((await response.json()) as { conversationId: string }).conversationId;
      }
      const pages: MessagePage[] = [];
      let query = "?limit=100";
      for (;;) {
        const response = await send(big, `/api/chat/conversations/${id}${query}`, {
          headers: credential,
        });
        expect(response.status).toBe(200);
        const text = await response.text();
        expect(text.length).toBeLessThan(1_100_000);
        const page = JSON.parse(text) as MessagePage;
        pages.push(page);
        if (page.nextCursor === null) break;
        query = `?limit=100&cursor=${page.nextCursor}`;
      }
      expect(pages.length).toBeGreaterThan(1);
      const all = pages.reverse().flatMap((page) => page.messages);
      expect(all.map((message) => message.role)).toEqual(
        Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? "user" : "assistant")),
      );
      expect(all.filter((m) => m.role === "user").map((m) => m.content)).toEqual(
        Array.from({ length: 6 }, (_, i) => `turn ${i}`),
      );
    } finally {
      big.close();
    }
  });
});
