/**
 * What chat holds about a user under the privacy rights: the export has the user's conversations
 * and those of the user's API keys (with their messages and usage), erasure deletes them, and
 * retention deletes messages past CHAT_RETENTION_DAYS in bounded batches, then the conversations
 * left empty.
 */
import { afterEach, describe, expect, test } from "bun:test";
import {
  chatConversations,
  chatMessages,
  chatReservations,
  chatUsage,
} from "../../../src/db/schema";
import type { ChatFeature } from "../../../src/modules/chat/feature";
import { createChatSeal } from "../../../src/modules/chat/history-seal";
import { CHAT_ROWS_AHEAD_PART } from "../../../src/modules/chat/privacy";
import { loadFaq } from "../../../src/modules/chat/providers/faq";
import { createOfflineProvider } from "../../../src/modules/chat/providers/offline";
import type { ChatProvider } from "../../../src/modules/chat/providers/provider";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { createKey, STRONG_PASSWORD, signUp } from "../../support/auth";
import { asKey, asUser, chat, conversation, gatedProvider, SSE } from "../../support/chat";
import { ManualClock } from "../../support/clock";
import { eraseWatching } from "../../support/erasure";
import { auditedEvents } from "../../support/whatsapp";

const DAY_MS = 24 * 60 * 60 * 1000;
let target: TestApp | undefined;
afterEach(() => target?.close());

/** The ids of every conversation stored. */
const conversationIds = (app: TestApp) =>
  app.db
    .select()
    .from(chatConversations)
    .all()
    .map((c) => c.id);

const start = async (app: TestApp, credential: Record<string, string>, message: string) => {
  const response = await chat(app, credential, { message });
  expect(response.status).toBe(200);
  return ((await response.json()) as { conversationId: string }).conversationId;
};

describe("export and erasure", () => {
  test("a conversation whose time, or a message whose time, the file holds as no time can be is left out of the export, which comes whole; a usage no count can be is exported as none (probes 43b F1, F2, 44a F3)", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const kept = await start(target, asUser(alice), "kept");
    const times = await start(target, asUser(alice), "conversation time");
    const messageTime = await start(target, asUser(alice), "message time");
    const run = (query: string, values: (string | number)[]) =>
      target!.db.$client.run(query, values);
    run("UPDATE chat_conversations SET updated_at = 'abc' WHERE id = ?", [times]);
    run("UPDATE chat_messages SET created_at = 9e15 WHERE conversation_id = ? AND role = 'user'", [
      messageTime,
    ]);
    run(
      "UPDATE chat_messages SET prompt_tokens = 'abc' WHERE conversation_id = ? AND role = 'assistant'",
      [kept],
    );
    run("UPDATE chat_usage SET used_tokens = 'abc', requests = -1 WHERE owner_id = ?", [
      alice.userId,
    ]);
    const response = await send(target, "/api/me/export", { headers: asUser(alice) });
    expect(response.status).toBe(200);
    // Whole JSON: a cut answer does not parse.
    const document = (await response.json()) as {
      chat: {
        conversations: { id: string; messages: { usage: unknown }[] }[];
        usage: { usedTokens: unknown; requests: unknown }[];
      };
    };
    expect(document.chat.conversations.map((c) => c.id)).toEqual([kept]);
    expect(document.chat.conversations[0]!.messages.map((m) => m.usage)).toEqual([null, null]);
    expect(document.chat.usage.map((u) => [u.usedTokens, u.requests])).toEqual([[null, null]]);
  });

  test("the export holds the user's and the user's keys' conversations, nobody else's", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const bob = await signUp(target);
    const { key, record } = createKey(target, ["chat"], alice.userId);
    const mine = await start(target, asUser(alice), "How do I sign up?");
    const keys = await start(target, asKey(key), "What are the rate limits?");
    await start(target, asUser(bob), "bob's secret question");

    const response = await send(target, "/api/me/export", { headers: asUser(alice) });
    expect(response.status).toBe(200);
    const document = (await response.json()) as {
      chat: {
        conversations: {
          id: string;
          owner: string;
          messages: { role: string; content: string }[];
        }[];
        usage: { principal: string; requests: number }[];
      };
    };
    const byId = new Map(document.chat.conversations.map((c) => [c.id, c]));
    expect([...byId.keys()].sort()).toEqual([mine, keys].sort());
    expect(byId.get(mine)!.owner).toBe(`user:${alice.userId}`);
    expect(byId.get(keys)!.owner).toBe(`key:${record.id}`);
    expect(byId.get(mine)!.messages.map((m) => m.role)).toEqual(["user", "assistant"]);
    expect(byId.get(mine)!.messages[0]!.content).toBe("How do I sign up?");
    expect(JSON.stringify(document)).not.toContain("bob's secret question");
    expect(document.chat.usage.map((u) => u.principal).sort()).toEqual(
      [`key:${record.id}`, `user:${alice.userId}`].sort(),
    );
  });

  test("keys' user_id swapped in the file: another's key is in neither the user's export nor erasure (probe 20c F3), the user's own moved away is still erased with them (probe 38b F7)", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const bob = await signUp(target);
    const bobs = createKey(target, ["chat"], bob.userId);
    const bobsChat = await start(target, asKey(bobs.key), "bob's key's secret question");
    const alices = createKey(target, ["chat"], alice.userId);
    const alicesChat = await start(target, asKey(alices.key), "alice's key's question");
    const swap = "UPDATE api_keys SET user_id = ? WHERE id = ?";
    target.db.$client.run(swap, [alice.userId, bobs.record.id]);
    target.db.$client.run(swap, [bob.userId, alices.record.id]);
    // The export reads the keys the file lists under the user, each checked (probe 39a F3): the
    // swapped keys are in neither export.
    for (const [who, other] of [
      [alice, bobs],
      [bob, alices],
    ] as const) {
      const exported = await send(target, "/api/me/export", { headers: asUser(who) });
      expect(exported.status).toBe(200);
      const text = await exported.text();
      expect(text).not.toContain(other.record.id);
      expect(text).not.toContain("secret question");
    }
    const erased = await send(target, "/api/me", { method: "DELETE", headers: asUser(alice) });
    expect(erased.status).toBe(204);
    expect(conversationIds(target)).toEqual([bobsChat]);
    expect(alicesChat).not.toBe(bobsChat);
    const row = target.db.$client
      .query("SELECT revoked_at AS revokedAt FROM api_keys WHERE id = ?")
      .get(alices.record.id) as { revokedAt: number | null };
    expect(row.revokedAt).not.toBeNull();
  });

  test("every key's seal is compared ahead of the erasure's transaction, a part at a time, whatever its rowid; the transaction compares what the scan found and what came after it (probes 91e F1, 91f F1)", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const bob = await signUp(target);
    const alices = createKey(target, ["chat"], alice.userId);
    const asked = await start(target, asKey(alices.key), "alice's key's question");
    for (let i = 0; i < 2_500; i++) createKey(target, ["chat"], bob.userId);
    // Alice's key moved to Bob in the file, and to rowid -1 (probe 91f F1: the scan started past
    // 0): only her key's seal says it is hers.
    target.db.$client.run("UPDATE api_keys SET user_id = ?, rowid = -1 WHERE id = ?", [
      bob.userId,
      alices.record.id,
    ]);
    const { apiKeys } = target.services;
    const parts: number[] = [];
    const scanPart = apiKeys.sealScanPart.bind(apiKeys);
    apiKeys.sealScanPart = (userId, after, limit) => {
      const part = scanPart(userId, after, limit);
      parts.push(part.ids.length);
      return part;
    };
    const compared: unknown[] = [];
    const sealedKeysOf = apiKeys.sealedKeysOf.bind(apiKeys);
    apiKeys.sealedKeysOf = (userId, scanned) => {
      compared.push(scanned);
      return sealedKeysOf(userId, scanned);
    };
    const lastRowid = target.db.$client
      .query<{ rowid: string }, []>("SELECT CAST(max(rowid) AS TEXT) AS rowid FROM api_keys")
      .get()!.rowid;
    const erased = await send(target, "/api/me", { method: "DELETE", headers: asUser(alice) });
    expect(erased.status).toBe(204);
    // 2,501 keys in three parts and the one past the end; the transaction's look is the scan's.
    expect(parts).toEqual([1, 0, 0, 0]);
    expect(compared).toEqual([{ ids: [alices.record.id], throughRowid: lastRowid }]);
    expect(conversationIds(target)).not.toContain(asked);
    const row = target.db.$client
      .query("SELECT revoked_at AS revokedAt FROM api_keys WHERE id = ?")
      .get(alices.record.id) as { revokedAt: number | null };
    expect(row.revokedAt).not.toBeNull();
  });

  test("a conversation whose owner the file moved to someone else or to no one is still erased with its owner, by what its seal names (probe 72a F1)", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const bob = await signUp(target);
    const { key } = createKey(target, ["chat"], alice.userId);
    const hidden = await start(target, asUser(alice), "my secret diagnosis is XYZZY");
    const hiddenKeys = await start(target, asKey(key), "the key's secret question");
    const bobs = await start(target, asUser(bob), "bob's own question");
    const move = "UPDATE chat_conversations SET owner_kind = ?, owner_id = ? WHERE id = ?";
    target.db.$client.run(move, ["user", "not-a-user", hidden]);
    target.db.$client.run(move, ["user", bob.userId, hiddenKeys]);
    const erased = await send(target, "/api/me", { method: "DELETE", headers: asUser(alice) });
    expect(erased.status).toBe(204);
    expect(conversationIds(target)).toEqual([bobs]);
    const left = target.db.select().from(chatMessages).all();
    expect(left.map((m) => m.conversationId)).toEqual([bobs, bobs]);
    expect(JSON.stringify(left)).not.toContain("XYZZY");
    expect(JSON.stringify(left)).not.toContain("secret question");
  });

  test("a conversation of the user's key, both moved to another account in the file, is erased with the user: the transaction finds the key by its seal and gives the conversation back to it (probe 72c B1)", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const bob = await signUp(target);
    const { key, record } = createKey(target, ["chat"], alice.userId);
    const moved = await start(target, asKey(key), "ALICE-KEY-PRIVATE");
    const bobs = await start(target, asUser(bob), "bob's own question");
    target.db.$client.run("UPDATE api_keys SET user_id = ? WHERE id = ?", [bob.userId, record.id]);
    target.db.$client.run(
      "UPDATE chat_conversations SET owner_kind = 'user', owner_id = ? WHERE id = ?",
      [bob.userId, moved],
    );
    const erased = await send(target, "/api/me", { method: "DELETE", headers: asUser(alice) });
    expect(erased.status).toBe(204);
    expect(conversationIds(target)).toEqual([bobs]);
    const left = JSON.stringify(target.db.select().from(chatMessages).all());
    expect(left).not.toContain("ALICE-KEY-PRIVATE");
  });

  test("an erasure's part finding conversations to give back spends about its HMAC budget, however many keys the user has (probe 72c B3)", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    await start(target, asUser(alice), "one");
    // 50 rows failing their seal: each costs an HMAC for every owner the user has.
    const insert = target.db.$client.query(
      "INSERT INTO chat_conversations (id, owner_kind, owner_id, seal, created_at, updated_at, message_count) VALUES (?, 'user', 'nobody', 'x', 0, 0, 0)",
    );
    for (let i = 0; i < 50; i++) insert.run(`forged-${i}`);
    const owners = [
      { kind: "user" as const, id: alice.userId },
      ...Array.from({ length: 99 }, (_, i) => ({ kind: "key" as const, id: `key-${i}` })),
    ];
    const chat = (target.services.features.find((f) => f.name === "chat") as ChatFeature).service;
    let after: string | null = null;
    let parts = 0;
    let failing = 0;
    do {
      const part = chat.reclaimSealedTo(owners, after, CHAT_ROWS_AHEAD_PART, 1_000);
      after = part.next;
      failing += part.failing.length;
      parts++;
    } while (after !== null);
    // 1 + 100 HMACs a forged row: about ten rows a part, so six parts or so, not one.
    expect(parts).toBeGreaterThanOrEqual(5);
    expect(failing).toBe(50);
  });

  test("erasure deletes the user's and the user's keys' conversations, messages and usage", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const bob = await signUp(target);
    const { key } = createKey(target, ["chat"], alice.userId);
    await start(target, asUser(alice), "one");
    await start(target, asKey(key), "two");
    const bobs = await start(target, asUser(bob), "three");

    const erased = await send(target, "/api/me", { method: "DELETE", headers: asUser(alice) });
    expect(erased.status).toBe(204);
    const conversations = target.db.select().from(chatConversations).all();
    expect(conversations.map((c) => c.id)).toEqual([bobs]);
    const messages = target.db.select().from(chatMessages).all();
    expect(messages.every((m) => m.conversationId === bobs)).toBe(true);
    expect(messages).toHaveLength(2);
    const usage = target.db.select().from(chatUsage).all();
    expect(usage.map((u) => `${u.ownerKind}:${u.ownerId}`)).toEqual([`user:${bob.userId}`]);
  });
});

describe("a long history is deleted ahead of the erasure's transaction, a part at a time (probe 41b F5)", () => {
  test("requests are answered between parts, each seeing the history part-deleted with the account still there; then nothing of it is left, and another's is untouched", async () => {
    target = buildTestApp();
    const app = target;
    const alice = await signUp(app);
    const bob = await signUp(app);
    const { key } = createKey(app, ["chat"], alice.userId);
    const own = await start(app, asUser(alice), "one");
    const keys = await start(app, asKey(key), "two");
    const bobs = await start(app, asUser(bob), "three");
    // A long history written into the file: the erasure deletes rows, it does not read them.
    const sqlite = app.db.$client;
    const insert = sqlite.query(
      "INSERT INTO chat_messages (conversation_id, role, content, incomplete, tokens, created_at) VALUES (?, 'user', 'x', 0, 1, 0)",
    );
    sqlite.transaction(() => {
      for (let i = 0; i < 2 * CHAT_ROWS_AHEAD_PART + 500; i++) insert.run(i % 3 === 0 ? keys : own);
    })();
    const aliceMessages = () =>
      (
        sqlite
          .query("SELECT count(*) AS n FROM chat_messages WHERE conversation_id IN (?, ?)")
          .get(own, keys) as { n: number }
      ).n;
    const accountStands = () =>
      sqlite.query("SELECT 1 FROM users WHERE id = ?").get(alice.userId) !== null;
    const before = aliceMessages();
    let seenPartway = false;
    const erasure = eraseWatching(app, asUser(alice), () => {
      const left = aliceMessages();
      if (left > 0 && left < before && accountStands()) seenPartway = true;
    });
    expect((await erasure).status).toBe(204);
    // One transaction over the whole history: every request saw all of it or none.
    expect(seenPartway).toBe(true);
    expect(aliceMessages()).toBe(0);
    expect(conversationIds(app)).toEqual([bobs]);
    expect(app.db.select().from(chatMessages).all()).toHaveLength(2);
  });

  test("an owner with many short conversations: a part takes the oldest that fit, whole, and the next starts at what is left, each conversation counting one row (probe 42a F1)", async () => {
    target = buildTestApp();
    const app = target;
    const alice = await signUp(app);
    const bob = await signUp(app);
    const bobs = await start(app, asUser(bob), "bob's");
    const sqlite = app.db.$client;
    const conversation = sqlite.query(
      "INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at, message_count) VALUES (?, 'user', ?, ?, ?, 1)",
    );
    const message = sqlite.query(
      "INSERT INTO chat_messages (conversation_id, role, content, incomplete, tokens, created_at) VALUES (?, 'user', 'x', 0, 1, ?)",
    );
    const ids = Array.from({ length: 300 }, (_, i) => `c${String(i).padStart(4, "0")}`);
    sqlite.transaction(() => {
      ids.forEach((id, i) => {
        conversation.run(id, alice.userId, i, i);
        message.run(id, i);
      });
    })();
    const left = () =>
      (
        sqlite
          .query("SELECT id FROM chat_conversations WHERE owner_id = ? ORDER BY created_at")
          .all(alice.userId) as { id: string }[]
      ).map((row) => row.id);
    const chatFeature = app.services.features.find((f) => f.name === "chat") as ChatFeature;
    const owners = [{ kind: "user" as const, id: alice.userId }];
    // A message and its conversation: two rows each, fifty in a part of a hundred.
    expect(chatFeature.service.eraseSomeChat(owners, 0, 100)).toBe(0);
    expect(left()).toEqual(ids.slice(50));
    let parts = 1;
    while (chatFeature.service.eraseSomeChat(owners, 0, 100) === 0) parts++;
    // The part that takes the last of them says none is left (no empty part after it).
    expect(parts).toBe(6 - 1);
    expect(left()).toEqual([]);
    expect(conversationIds(app)).toEqual([bobs]);
  });

  test("a conversation of exactly a part's messages goes whole, never left with none (probe 42b F4)", async () => {
    target = buildTestApp();
    const app = target;
    const alice = await signUp(app);
    const id = await start(app, asUser(alice), "one");
    const chatFeature = app.services.features.find((f) => f.name === "chat") as ChatFeature;
    const owners = [{ kind: "user" as const, id: alice.userId }];
    // Whole in one part, which then says none is left.
    expect(chatFeature.service.eraseSomeChat(owners, 0, 2)).toBe(1);
    expect(
      (await send(app, `/api/chat/conversations/${id}`, { headers: asUser(alice) })).status,
    ).toBe(404);
    expect(app.db.select().from(chatMessages).all()).toHaveLength(0);
    expect(chatFeature.service.eraseSomeChat(owners, 0, 2)).toBe(1);
  });

  test("an erasure stopped between two parts leaves each conversation gone whole or reading as after a retention run: its oldest messages gone, the rest shown", async () => {
    target = buildTestApp();
    const app = target;
    const alice = await signUp(app);
    const id = await start(app, asUser(alice), "one");
    for (const message of ["two", "three"]) {
      expect((await chat(app, asUser(alice), { message, conversationId: id })).status).toBe(200);
    }
    const chatFeature = app.services.features.find((f) => f.name === "chat") as ChatFeature;
    const owners = [{ kind: "user" as const, id: alice.userId }];
    // A part of two: the two oldest of six go, and the next part starts from the same owner.
    expect(chatFeature.service.eraseSomeChat(owners, 0, 2)).toBe(0);
    const shown = await send(app, `/api/chat/conversations/${id}`, { headers: asUser(alice) });
    expect(shown.status).toBe(200);
    const { messages } = (await shown.json()) as { messages: { content: string }[] };
    expect(messages).toHaveLength(4);
    expect(messages[0]!.content).toBe("two");
    // Its four left and itself fit in a part of ten: it goes whole, never shown empty; the owner
    // has nothing left.
    expect(chatFeature.service.eraseSomeChat(owners, 0, 10)).toBe(1);
    expect(
      (await send(app, `/api/chat/conversations/${id}`, { headers: asUser(alice) })).status,
    ).toBe(404);
    expect(app.db.select().from(chatConversations).all()).toHaveLength(0);
    expect((await send(app, "/api/me", { method: "DELETE", headers: asUser(alice) })).status).toBe(
      204,
    );
    expect(app.db.select().from(chatConversations).all()).toHaveLength(0);
  });
});

describe("the export is written as it is read", () => {
  type Exported = {
    chat: { conversations: { id: string; messages: { role: string; content: string }[] }[] };
  };

  // 251 turns: 502 messages, more than the 500 the export reads at a time.
  const LONG = 251;

  test("a conversation longer than a page of the export comes whole and in order, beside the others; the answer is JSON with the security headers, sent in pieces", async () => {
    const clock = new ManualClock();
    target = buildTestApp({ clock });
    const alice = await signUp(target);
    const long = await conversation(target, clock, asUser(alice), LONG);
    const short = await start(target, asUser(alice), "one more question");

    const response = await send(target, "/api/me/export", { headers: asUser(alice) });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toStartWith("application/json");
    expect(response.headers.get("x-content-type-options")).toBe("nosniff");
    expect(response.headers.get("cache-control")).toBe("no-store");
    expect(response.headers.get("x-request-id")).toBeTruthy();
    const reader = response.body!.getReader();
    const chunks: Uint8Array[] = [];
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      chunks.push(read.value);
    }
    expect(chunks.length).toBeGreaterThan(1);
    const document = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Exported;
    const byId = new Map(document.chat.conversations.map((c) => [c.id, c.messages]));
    expect([...byId.keys()]).toEqual([long, short]);
    const messages = byId.get(long)!;
    expect(messages).toHaveLength(LONG * 2);
    expect(messages.filter((m) => m.role === "user").map((m) => m.content)).toEqual(
      Array.from({ length: LONG }, (_, i) => `turn ${i}`),
    );
    expect(messages.map((m) => m.role)).toEqual(
      Array.from({ length: LONG * 2 }, (_, i) => (i % 2 === 0 ? "user" : "assistant")),
    );
    expect(byId.get(short)!.map((m) => m.content)[0]).toBe("one more question");
  }, 60_000);

  test("a message changed in the file after the export checked its conversation and before it wrote that page cuts the answer: never a document that looks whole; reported without the text", async () => {
    const clock = new ManualClock();
    target = buildTestApp({ clock });
    const alice = await signUp(target);
    const long = await conversation(target, clock, asUser(alice), LONG);

    const response = await send(target, "/api/me/export", { headers: asUser(alice) });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    // The conversation's first page is on its way: its last message, on the next page, is
    // changed now (someone writing the file).
    target.db.$client
      .query(
        "UPDATE chat_messages SET content = 'IBAN DE00 1234' WHERE id = (SELECT max(id) FROM chat_messages WHERE conversation_id = ?)",
      )
      .run(long);
    let received = new TextDecoder().decode(first.value);
    let failure: unknown = null;
    try {
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        received += new TextDecoder().decode(read.value);
      }
    } catch (error) {
      failure = error;
    }
    expect(failure).not.toBeNull();
    expect(() => JSON.parse(received)).toThrow();
    expect(received).not.toContain("IBAN");
    const reported = target.logs.entries.find((entry) => entry.code === "EXPORT_CUT");
    expect(reported).toBeDefined();
    expect(JSON.stringify(target.logs.entries)).not.toContain("IBAN");
    // Audited as a read of the conversation would have found it (probe 29b F3).
    expect(auditedEvents(target, "chat.conversation_tampered")).toEqual([
      { conversation: long, actor: "system" },
    ]);
  }, 60_000);

  test("a conversation deleted while the export is read is left out of the rest, not written with no messages (probe 38b F4)", async () => {
    const clock = new ManualClock();
    target = buildTestApp({ clock });
    const alice = await signUp(target);
    // A second apart: the export writes conversations oldest first.
    const first = await start(target, asUser(alice), "first question");
    clock.advance(1000);
    const second = await start(target, asUser(alice), "second question");
    clock.advance(1000);
    const third = await start(target, asUser(alice), "third question");
    const pieces = target.services.privacy.exportText(alice.userId)![Symbol.iterator]();
    let text = "";
    // Read up to the first conversation's head, then its owner deletes the second.
    while (!text.includes(first)) text += pieces.next().value as string;
    const deleted = await send(target, `/api/chat/conversations/${second}`, {
      method: "DELETE",
      headers: asUser(alice),
    });
    expect(deleted.status).toBe(204);
    for (let next = pieces.next(); !next.done; next = pieces.next()) text += next.value;
    const document = JSON.parse(text) as Exported;
    expect(document.chat.conversations.map((c) => c.id)).toEqual([first, third]);
    expect(document.chat.conversations.every((c) => c.messages.length === 2)).toBe(true);
  });

  test("a conversation deleted while the export checks its messages is left out too (probe 39a F4)", async () => {
    const clock = new ManualClock();
    target = buildTestApp({ clock });
    const alice = await signUp(target);
    const first = await start(target, asUser(alice), "first question");
    clock.advance(1000);
    const second = await start(target, asUser(alice), "second question");
    const pieces = target.services.privacy.exportText(alice.userId)![Symbol.iterator]();
    let text = "";
    const next = () => {
      const piece = pieces.next();
      if (!piece.done) text += piece.value;
      return piece;
    };
    while (!text.includes(first)) next();
    // The rest of the first conversation, up to the second's turn and the check of its messages.
    while (!text.endsWith("]}")) next();
    expect(next().value).toBe("");
    expect(next().value).toBe("");
    const deleted = await send(target, `/api/chat/conversations/${second}`, {
      method: "DELETE",
      headers: asUser(alice),
    });
    expect(deleted.status).toBe(204);
    while (!next().done);
    const document = JSON.parse(text) as Exported;
    expect(document.chat.conversations.map((c) => c.id)).toEqual([first]);
  });

  test("conversations past a page of the export come, each once", async () => {
    const clock = new ManualClock();
    target = buildTestApp({
      clock,
      env: {
        RATE_LIMIT_CHAT: "1000000",
        RATE_LIMIT_PER_MINUTE: "1000000",
        RATE_LIMIT_BURST: "1000000",
      },
    });
    const alice = await signUp(target);
    const made: string[] = [];
    // Some sharing a creation time: the page boundary falls among them.
    for (let i = 0; i < 503; i++) {
      if (i % 50 === 0) clock.advance(1000);
      made.push(await start(target, asUser(alice), `question ${i}`));
    }
    const ids = (
      JSON.parse(JSON.stringify(target.services.privacy.export(alice.userId))) as Exported
    ).chat.conversations.map((c) => c.id);
    expect(ids).toHaveLength(503);
    expect(new Set(ids)).toEqual(new Set(made));
  }, 60_000);

  test("the document built whole in memory (the service's export, JSON.stringify) is what the route streams", async () => {
    const clock = new ManualClock();
    target = buildTestApp({ clock });
    const alice = await signUp(target);
    await conversation(target, clock, asUser(alice), 3);
    await start(target, asUser(alice), "one more question");
    const streamed = (await (
      await send(target, "/api/me/export", { headers: asUser(alice) })
    ).json()) as Record<string, unknown>;
    const whole = JSON.parse(
      JSON.stringify(target.services.privacy.export(alice.userId)),
    ) as Record<string, unknown>;
    expect((whole.chat as Exported["chat"]).conversations).toHaveLength(2);
    expect({ ...whole, exportedAt: null }).toEqual({ ...streamed, exportedAt: null });
  });

  /**
   * The export's answer read up to its first chunk (the long conversation's first page), then
   * `between` run, then the rest: the text received and whether the read failed.
   */
  async function exportAround(app: TestApp, session: { accessToken: string }, between: () => void) {
    const response = await send(app, "/api/me/export", { headers: asUser(session) });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const first = await reader.read();
    between();
    let text = new TextDecoder().decode(first.value);
    try {
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        text += new TextDecoder().decode(read.value);
      }
    } catch {
      return { text, cut: true };
    }
    return { text, cut: false };
  }

  /** A user with a conversation of LONG turns, and its message ids in order. */
  async function longConversation() {
    const clock = new ManualClock();
    const app = buildTestApp({ clock });
    target = app;
    const alice = await signUp(app);
    const long = await conversation(app, clock, asUser(alice), LONG);
    const ids = app.db.$client
      .query<{ id: number }, [string]>(
        "SELECT id FROM chat_messages WHERE conversation_id = ? ORDER BY id",
      )
      .all(long)
      .map((row) => row.id);
    return { app, alice, long, ids };
  }

  const deleteMessages = (app: TestApp, conversation: string, where: string) =>
    app.db.$client
      .query(`DELETE FROM chat_messages WHERE conversation_id = ? AND ${where}`)
      .run(conversation);

  test("retention deleting the oldest messages past the page the export has written does not cut it: the rest follows, checked from the oldest left (probe 29b F1)", async () => {
    const { app, alice, long, ids } = await longConversation();
    // As retention does: the oldest 501, one past the first page of 500.
    const { text, cut } = await exportAround(app, alice, () =>
      deleteMessages(app, long, `id <= ${ids[500]}`),
    );
    expect(cut).toBe(false);
    const document = JSON.parse(text) as Exported;
    const messages = document.chat.conversations[0]!.messages;
    // The first page as written, then the one message retention left after it (the last reply).
    expect(messages).toHaveLength(501);
    expect(messages.filter((m) => m.role === "user").map((m) => m.content)).toEqual(
      Array.from({ length: 250 }, (_, i) => `turn ${i}`),
    );
    expect(messages.at(-1)!.role).toBe("assistant");
    expect(auditedEvents(app, "chat.conversation_tampered")).toEqual([]);
  }, 60_000);

  test("a message deleted from the middle, just past the page the export has written, still cuts it: older ones are left", async () => {
    const { app, alice, long, ids } = await longConversation();
    // The 500th and 501st go; the 499 before them stay.
    const { cut } = await exportAround(app, alice, () =>
      deleteMessages(app, long, `id IN (${ids[499]}, ${ids[500]})`),
    );
    expect(cut).toBe(true);
    expect(auditedEvents(app, "chat.conversation_tampered")).toEqual([
      { conversation: long, actor: "system" },
    ]);
  }, 60_000);
});

describe("a turn racing its owner's erasure", () => {
  for (const [label, headers] of [
    ["whole", {}],
    ["streamed", SSE],
  ] as const) {
    test(`a new conversation whose user is erased while the upstream answers is not kept (${label})`, async () => {
      const provider = gatedProvider();
      target = buildTestApp({ chatProvider: provider });
      const app = target;
      const alice = await signUp(app);
      const bob = await signUp(app);
      const { key } = createKey(app, ["chat"], alice.userId);
      const turns = [
        chat(app, { ...asUser(alice), ...headers }, { message: "alice's private question" }),
        chat(app, { ...asKey(key), ...headers }, { message: "alice's key's private question" }),
        chat(app, { ...asUser(bob), ...headers }, { message: "bob asks" }),
      ];
      while (provider.waiting() < 3) await Bun.sleep(1);
      const erased = await send(app, "/api/me", { method: "DELETE", headers: asUser(alice) });
      expect(erased.status).toBe(204);
      // The turns in flight of the user and the user's key hold nothing naming them any more.
      const held = app.db.select().from(chatReservations).all();
      expect(held.map((r) => `${r.ownerKind}:${r.ownerId}`)).toEqual([`user:${bob.userId}`]);
      provider.open();
      for (const response of await Promise.all(turns)) {
        expect(response.status).toBe(200);
        await response.text();
      }
      expect(app.db.select().from(chatReservations).all()).toEqual([]);
      const days = app.db.select().from(chatUsage).all();
      expect(days.map((d) => [`${d.ownerKind}:${d.ownerId}`, d.reservedTokens])).toEqual([
        [`user:${bob.userId}`, 0],
      ]);

      const kept = app.db.select().from(chatConversations).all();
      expect(kept.map((c) => `${c.ownerKind}:${c.ownerId}`)).toEqual([`user:${bob.userId}`]);
      const messages = app.db.select().from(chatMessages).all();
      expect(messages.map((m) => m.content).join(" ")).not.toContain("alice");
      expect(messages).toHaveLength(2);
    });
  }
});

describe("an owner gone before the turn is prepared, or while it runs", () => {
  test("a user erased between authentication and the budget gets no usage row made again", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    const erased = await send(target, "/api/me", { method: "DELETE", headers: asUser(alice) });
    expect(erased.status).toBe(204);
    // What a request authenticated just before the erasure does next.
    const chatFeature = target.services.features.find((f) => f.name === "chat") as ChatFeature;
    const prepared = await chatFeature.service.prepare({
      owner: { kind: "user", id: alice.userId },
      message: "asked as the erasure committed",
      requestId: "late",
    });
    expect(prepared).toEqual({ kind: "owner_gone" });
    expect(target.db.select().from(chatUsage).all()).toEqual([]);
    expect(target.db.select().from(chatConversations).all()).toEqual([]);
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('chat_requests_total{provider="offline",outcome="owner_gone"} 1');
  });

  test("over HTTP: a signed-in user whose account row no longer holds gets 401, and nothing is kept", async () => {
    target = buildTestApp();
    const alice = await signUp(target);
    // The access token is verified and cached (its session and account are read again within
    // 30 s); the account row is then written into the file and fails its seal, which is how the
    // chat's own owner check, in the turn, finds it gone.
    expect((await send(target, "/api/chat/conversations", { headers: asUser(alice) })).status).toBe(
      200,
    );
    target.db.$client.run("UPDATE users SET seal = NULL WHERE id = ?", [alice.userId]);
    const response = await chat(target, asUser(alice), { message: "asked by a refused account" });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
    expect(target.db.select().from(chatUsage).all()).toEqual([]);
    expect(target.db.select().from(chatConversations).all()).toEqual([]);
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('chat_requests_total{provider="offline",outcome="owner_gone"} 1');
  });

  test("a key revoked while its turn on an existing conversation waits for the upstream adds nothing to it", async () => {
    const provider = gatedProvider();
    target = buildTestApp({ chatProvider: provider });
    const app = target;
    const alice = await signUp(app);
    const { key, record } = createKey(app, ["chat"], alice.userId);
    // The key's conversation from an earlier turn, sealed as Palisade seals what it writes.
    const now = Date.now();
    const seal = createChatSeal(app.config.audit.secretKey);
    const conversationId = "k3yC0nversation0000001";
    app.db
      .insert(chatConversations)
      .values({
        id: conversationId,
        ownerKind: "key",
        ownerId: record.id,
        createdAt: now,
        updatedAt: now,
        seal: seal.conversation({ id: conversationId, ownerKind: "key", ownerId: record.id }),
      })
      .run();
    const first = {
      id: 1,
      conversationId,
      previousSeal: null,
      role: "user" as const,
      content: "first",
      incomplete: false,
      tokens: 1,
    };
    const reply = {
      ...first,
      id: 2,
      previousSeal: seal.message(first),
      role: "assistant" as const,
      content: "reply",
    };
    app.db
      .insert(chatMessages)
      .values([first, reply].map((m) => ({ ...m, createdAt: now, seal: seal.message(m) })))
      .run();
    const answering = chat(app, asKey(key), {
      message: "second question",
      conversationId: "k3yC0nversation0000001",
    });
    while (provider.waiting() < 1) await Bun.sleep(1);
    expect(app.services.apiKeys.revoke(record.id, "test")).toBe(true);
    provider.open();
    const response = await answering;
    expect(response.status).toBe(200);
    expect(
      app.db
        .select()
        .from(chatMessages)
        .all()
        .map((m) => m.content),
    ).toEqual(["first", "reply"]);
  });
});

describe("retention", () => {
  test("messages past CHAT_RETENTION_DAYS go in the background; empty old conversations too", async () => {
    const clock = new ManualClock();
    target = buildTestApp({ clock, env: { CHAT_RETENTION_DAYS: "30" } });
    const alice = await signUp(target);
    const old = await start(target, asUser(alice), "old and forgotten");
    const kept = await start(target, asUser(alice), "old, continued later");

    clock.advance(20 * DAY_MS);
    const { logIn } = await import("../../support/auth");
    const session = await logIn(target, alice.email);
    await chat(target, asUser(session), { message: "recent", conversationId: kept });

    clock.advance(11 * DAY_MS);
    // A count written into the file that no count can be: retention counts instead of failing.
    target.db.$client.run("UPDATE chat_conversations SET message_count = 'abc' WHERE id = ?", [
      kept,
    ]);
    target.services.runMaintenance();
    const conversations = target.db.select().from(chatConversations).all();
    expect(conversations.map((c) => c.id)).toEqual([kept]);
    expect(conversations.some((c) => c.id === old)).toBe(false);
    const messages = target.db.select().from(chatMessages).all();
    expect(messages.map((m) => m.content.slice(0, 6))).toEqual([
      "recent",
      messages[1]!.content.slice(0, 6),
    ]);
    expect(messages.every((m) => m.conversationId === kept)).toBe(true);
    // Its count went down with the messages retention took.
    const later = await logIn(target, alice.email);
    const list = await send(target, "/api/chat/conversations", { headers: asUser(later) });
    expect(((await list.json()) as { conversations: unknown[] }).conversations).toEqual([
      expect.objectContaining({ id: kept, messageCount: 2 }),
    ]);

    // Nothing young is touched: another run deletes nothing.
    const before = target.db.select().from(chatMessages).all().length;
    target.services.runMaintenance();
    expect(target.db.select().from(chatMessages).all()).toHaveLength(before);
  });

  /** A conversation of three turns a day apart (six messages); its id, the messages' ids, and a way to read it. */
  async function threeTurns(clock: ManualClock) {
    target = buildTestApp({ clock, env: { CHAT_RETENTION_DAYS: "30" } });
    const app = target;
    const alice = await signUp(app);
    const { logIn } = await import("../../support/auth");
    const id = await start(app, asUser(alice), "first");
    for (const message of ["second", "third"]) {
      clock.advance(DAY_MS);
      const turn = await chat(app, asUser(await logIn(app, alice.email)), {
        message,
        conversationId: id,
      });
      expect(turn.status).toBe(200);
    }
    const ids = app.db.$client
      .query<{ id: number }, []>("SELECT id FROM chat_messages ORDER BY id")
      .all()
      .map((row) => row.id);
    expect(ids).toHaveLength(6);
    const restamp = (days: number, ...which: number[]) =>
      app.db.$client.run(
        `UPDATE chat_messages SET created_at = created_at + ${days * DAY_MS} WHERE id IN (${which.join(",")})`,
      );
    const left = () =>
      app.db.$client
        .query<{ id: number }, []>("SELECT id FROM chat_messages ORDER BY id")
        .all()
        .map((row) => row.id);
    const shown = async () =>
      (
        await send(app, `/api/chat/conversations/${id}`, {
          headers: asUser(await logIn(app, alice.email)),
        })
      ).status;
    const service = (app.services.features.find((f) => f.name === "chat") as ChatFeature).service;
    return {
      ids,
      restamp,
      left,
      shown,
      retain: (batch?: number) => service.retain(clock.now(), batch),
    };
  }

  test("a conversation's messages go as a prefix by id: one stamped earlier by a clock stepped back takes those before it along, and the conversation still reads (probe 31a F6)", async () => {
    const clock = new ManualClock();
    const conversation = await threeTurns(clock);
    // The second turn's two messages as a clock stepped back a year stamped them.
    conversation.restamp(-365, conversation.ids[2]!, conversation.ids[3]!);
    conversation.retain();
    expect(conversation.left()).toEqual(conversation.ids.slice(4));
    expect(await conversation.shown()).toBe(200);
  });

  test("a message stamped in the future (a clock stepped forward for a turn) keeps no later message past the retention (probe 31b F1)", async () => {
    const clock = new ManualClock();
    const conversation = await threeTurns(clock);
    conversation.restamp(20 * 365, conversation.ids[0]!, conversation.ids[1]!);
    clock.advance(400 * DAY_MS);
    conversation.retain();
    expect(conversation.left()).toEqual([]);
  });

  test("a batch cut leaves a prefix: the conversation reads between two runs (probe 31b F2)", async () => {
    const clock = new ManualClock();
    const conversation = await threeTurns(clock);
    conversation.restamp(-365, conversation.ids[2]!, conversation.ids[3]!);
    clock.advance(40 * DAY_MS);
    conversation.retain(2);
    expect(conversation.left()).toEqual(conversation.ids.slice(2));
    expect(await conversation.shown()).toBe(200);
    conversation.retain(2);
    expect(conversation.left()).toEqual(conversation.ids.slice(4));
    expect(await conversation.shown()).toBe(200);
  });

  const offline = createOfflineProvider(loadFaq(null));

  test("a conversation whose messages all expire while a turn on it is in flight is kept for that turn, streamed or not (probe 31d F2)", async () => {
    for (const accept of [{}, SSE]) {
      const clock = new ManualClock();
      const gated = gatedProvider();
      let holding = false;
      const provider: ChatProvider = {
        ...gated,
        complete: (messages, options) =>
          holding ? gated.complete(messages, options) : offline.complete(messages, options),
        stream: (messages, options) =>
          holding ? gated.stream(messages, options) : offline.stream(messages, options),
      };
      target?.close();
      target = buildTestApp({ clock, env: { CHAT_RETENTION_DAYS: "30" }, chatProvider: provider });
      const app = target;
      const alice = await signUp(app);
      const { logIn } = await import("../../support/auth");
      const id = await start(app, asUser(alice), "first");
      clock.advance(40 * DAY_MS);
      holding = true;
      const turn = chat(
        app,
        asUser(await logIn(app, alice.email)),
        { message: "still there?", conversationId: id },
        accept,
      );
      while (gated.waiting() === 0) await Bun.sleep(5);
      const chatFeature = app.services.features.find((f) => f.name === "chat") as ChatFeature;
      // Every message of it is past the retention: they go, the conversation stays for the turn.
      chatFeature.service.retain(clock.now());
      expect(app.db.$client.query("SELECT count(*) AS n FROM chat_messages").get()).toEqual({
        n: 0,
      });
      gated.open();
      const answered = await turn;
      expect(answered.status).toBe(200);
      await answered.text();
      const shown = await send(app, `/api/chat/conversations/${id}`, {
        headers: asUser(await logIn(app, alice.email)),
      });
      expect(shown.status).toBe(200);
      const { messages } = (await shown.json()) as { messages: { content: string }[] };
      expect(messages.map((message) => message.content)[0]).toBe("still there?");
      expect(messages).toHaveLength(2);
    }
  });

  test("a conversation gone between a turn's ownership check and its reservation refuses the turn before the provider is called, its reservation given back (probe 31e F2)", async () => {
    let calls = 0;
    const provider: ChatProvider = {
      ...offline,
      complete: (messages, options) => {
        calls++;
        return offline.complete(messages, options);
      },
    };
    target = buildTestApp({ chatProvider: provider });
    const app = target;
    const alice = await signUp(app);
    const id = await start(app, asUser(alice), "first");
    // Whatever deletes it (retention, the owner, another process) does so as the turn reserves.
    app.db.$client.run(
      `CREATE TRIGGER gone_meanwhile AFTER INSERT ON chat_reservations BEGIN DELETE FROM chat_conversations WHERE id = '${id}'; END`,
    );
    const answered = await chat(app, asUser(alice), {
      message: "still there?",
      conversationId: id,
    });
    expect(answered.status).toBe(404);
    expect(calls).toBe(1);
    app.db.$client.run("DROP TRIGGER gone_meanwhile");
    expect(app.db.$client.query("SELECT count(*) AS n FROM chat_reservations").get()).toEqual({
      n: 0,
    });
    const usage = app.db.$client
      .query<{ reserved: number }, []>("SELECT sum(reserved_tokens) AS reserved FROM chat_usage")
      .get();
    expect(usage?.reserved).toBe(0);
  });

  test("each run deletes a bounded batch", async () => {
    const clock = new ManualClock();
    target = buildTestApp({ clock, env: { CHAT_RETENTION_DAYS: "1" } });
    const alice = await signUp(target);
    for (let i = 0; i < 3; i++) await start(target, asUser(alice), `zzz ${i}`);
    clock.advance(2 * DAY_MS);
    const chatFeature = target.services.features.find((f) => f.name === "chat") as ChatFeature;
    // Six old messages, batches of four: the four oldest go, with the two conversations they
    // emptied and the old usage row; then the last two messages and their conversation.
    expect(chatFeature.service.retain(clock.now(), 4)).toBe(4 + 2 + 1);
    expect(target.db.select().from(chatMessages).all()).toHaveLength(2);
    expect(target.db.select().from(chatConversations).all()).toHaveLength(1);
    expect(chatFeature.service.retain(clock.now(), 4)).toBe(2 + 1);
    expect(target.db.select().from(chatConversations).all()).toHaveLength(0);
    expect(chatFeature.service.retain(clock.now(), 4)).toBe(0);
  });
});

test("a user with over a thousand API keys exports whole: one condition a kind, not one an owner (probe 40a F1)", async () => {
  target = buildTestApp();
  const alice = await signUp(target);
  const keys = Array.from({ length: 1_100 }, () => createKey(target!, ["chat"], alice.userId));
  const chatted = await start(target, asKey(keys.at(-1)!.key), "from the last key");
  const response = await send(target, "/api/me/export", { headers: asUser(alice) });
  expect(response.status).toBe(200);
  const document = JSON.parse(await response.text()) as {
    chat: { conversations: { id: string }[] };
  };
  expect(document.chat.conversations.map((c) => c.id)).toEqual([chatted]);
}, 60_000);

const LONG_REPLY = 100_000;

/** An app whose model answers every turn with LONG_REPLY characters, and `turns` of them by alice. */
async function longHistory(turns: number, clock?: ManualClock, env: Record<string, string> = {}) {
  const longReplies: ChatProvider = {
    name: "offline",
    maxCompletionTokens: 1024,
    async complete() {
      return { text: "y".repeat(LONG_REPLY), usage: { promptTokens: 10, completionTokens: 1000 } };
    },
    async *stream() {
      yield { kind: "text", text: "y".repeat(LONG_REPLY) };
      yield { kind: "usage", usage: { promptTokens: 10, completionTokens: 1000 } };
    },
  };
  const app = buildTestApp({
    env: {
      RATE_LIMIT_CHAT: "1000",
      RATE_LIMIT_BURST: "1000",
      RATE_LIMIT_PER_MINUTE: "1000",
      CHAT_DAILY_TOKEN_BUDGET: "10000000",
      ...env,
    },
    chatProvider: longReplies,
    ...(clock ? { clock } : {}),
  });
  target = app;
  const alice = await signUp(app);
  const id = await start(app, asUser(alice), "turn 0");
  for (let turn = 1; turn < turns; turn++) {
    const response = await chat(app, asUser(alice), {
      message: `turn ${turn}`,
      conversationId: id,
    });
    if (response.status !== 200) throw new Error(`turn ${turn}: ${await response.text()}`);
  }
  return { app, alice, id };
}

describe("an export of long messages (probe 85e F3)", () => {
  test("is read a few megabytes of text at a time, not 500 messages whatever their length, and comes whole and in order", async () => {
    const REPLY = LONG_REPLY;
    const { app, alice } = await longHistory(60);
    target = app;
    // The full reads of chat_messages the export makes (Drizzle prepares each statement), and
    // how much text each returned.
    const sqlite = target.db.$client;
    const originalPrepare = sqlite.prepare;
    const pages: number[] = [];
    sqlite.prepare = function prepare(sql: string) {
      const statement = originalPrepare.call(sqlite, sql);
      if (/from "chat_messages"/.test(sql) && sql.includes('"content"')) {
        // Drizzle reads a select's rows as arrays (`values`).
        const values = statement.values.bind(statement);
        statement.values = ((...params: Parameters<typeof values>) => {
          const rows = values(...params);
          pages.push(JSON.stringify(rows).length);
          return rows;
        }) as typeof statement.values;
      }
      return statement;
    } as typeof sqlite.prepare;
    let document: { chat: { conversations: { messages: { role: string; content: string }[] }[] } };
    try {
      const exported = await send(target, "/api/me/export", { headers: asUser(alice) });
      expect(exported.status).toBe(200);
      document = (await exported.json()) as typeof document;
    } finally {
      sqlite.prepare = originalPrepare;
    }
    const messages = document.chat.conversations[0]!.messages;
    expect(messages).toHaveLength(120);
    expect(messages.map((m) => m.content)).toEqual(
      Array.from({ length: 120 }, (_, i) => (i % 2 === 0 ? `turn ${i / 2}` : "y".repeat(REPLY))),
    );
    // ~6 MB of replies: more than one page, none past 4 MB and one message.
    expect(pages.length).toBeGreaterThan(1);
    for (const characters of pages) {
      expect(characters).toBeLessThanOrEqual(4 * 1024 * 1024 + 2 * REPLY);
    }
  }, 60_000);
});

describe("deleting long messages (probe 85e F2)", () => {
  /** The text of each DELETE of chat messages the app runs. */
  function deletedText(app: TestApp) {
    const sqlite = app.db.$client;
    const originalPrepare = sqlite.prepare;
    const parts: number[] = [];
    sqlite.prepare = function prepare(sql: string) {
      const statement = originalPrepare.call(sqlite, sql);
      if (/^delete from "chat_messages"/.test(sql)) {
        const values = statement.values.bind(statement);
        statement.values = ((...params: Parameters<typeof values>) => {
          const rows = values(...params) as unknown[][];
          parts.push(rows.reduce((sum, row) => sum + Number(row[1] ?? 0), 0));
          return rows;
        }) as typeof statement.values;
      }
      return statement;
    } as typeof sqlite.prepare;
    return { parts, restore: () => (sqlite.prepare = originalPrepare) };
  }
  const PART = 4 * 1024 * 1024 + LONG_REPLY;

  test("retention takes at most 4 MB of text a run", async () => {
    const clock = new ManualClock();
    const { app } = await longHistory(60, clock, { CHAT_RETENTION_DAYS: "30" });
    const chatFeature = app.services.features.find((f) => f.name === "chat") as ChatFeature;
    clock.advance(400 * DAY_MS);
    const deleted = deletedText(app);
    try {
      const first = chatFeature.service.retain(clock.now());
      expect(first).toBeGreaterThan(0);
      expect(first).toBeLessThan(120);
      let runs = 1;
      while (chatFeature.service.retain(clock.now()) > 0) runs++;
      expect(runs).toBeGreaterThan(1);
      expect(app.db.select().from(chatMessages).all()).toHaveLength(0);
      expect(Math.max(...deleted.parts)).toBeLessThanOrEqual(PART);
    } finally {
      deleted.restore();
    }
  }, 60_000);

  test("a conversation's DELETE and an erasure's parts take at most 4 MB of text at a time", async () => {
    const { app, alice, id } = await longHistory(60);
    const second = await start(app, asUser(alice), "another");
    for (let turn = 1; turn < 60; turn++) {
      await chat(app, asUser(alice), { message: `again ${turn}`, conversationId: second });
    }
    const deleted = deletedText(app);
    try {
      const gone = await send(app, `/api/chat/conversations/${id}`, {
        method: "DELETE",
        headers: asUser(alice),
      });
      expect(gone.status).toBe(204);
      // A part, then the row with what is left (ON DELETE CASCADE), under 4 MB too.
      expect(deleted.parts.length).toBeGreaterThan(0);
      expect(Math.max(...deleted.parts)).toBeLessThanOrEqual(PART);
      deleted.parts.length = 0;
      const erased = await send(app, "/api/me", {
        method: "DELETE",
        headers: asUser(alice),
        body: { password: STRONG_PASSWORD },
      });
      expect(erased.status).toBe(204);
      expect(app.db.select().from(chatMessages).all()).toHaveLength(0);
      expect(deleted.parts.length).toBeGreaterThan(0);
      expect(Math.max(...deleted.parts)).toBeLessThanOrEqual(PART);
    } finally {
      deleted.restore();
    }
  }, 60_000);
});
