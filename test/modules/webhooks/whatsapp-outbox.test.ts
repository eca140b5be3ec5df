/**
 * The outbox worker against a local Graph API server: one reply per accepted message, the chat
 * turn run once and its reply resent on a retry, transient failures retried with backoff and given
 * up after a bounded time, permanent ones given up at once, leases that keep two workers (two
 * processes on one file) from sending the same reply, and a graceful stop that lets a send finish.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { UpstreamFailure } from "../../../src/modules/chat/providers/provider";
import {
  NON_TEXT_REPLY,
  OVER_BUDGET_REPLY,
  REFUSED_TEXT_REPLY,
  UPSTREAM_REFUSED_REPLY,
} from "../../../src/modules/webhooks/outbox";
import { buildTestApp, send, servicesTold, type TestApp } from "../../support/app";
import { cleanupsAfterEach } from "../../support/cleanups";
import { ManualClock } from "../../support/clock";
import { startGraphServer } from "../../support/graph-server";
import { anotherInstance } from "../../support/instance";
import {
  drainInNextProcess,
  type OutboxSetup,
  outboxSetup,
  whatsappOf,
} from "../../support/outbox";
import {
  auditedEvents,
  deliver,
  type InboundMessage,
  notification,
  ScriptedChat,
  sentId,
  sign,
  storedId,
  WA_APP_SECRET,
  WA_PHONE_NUMBER_ID,
  whatsappEnv,
} from "../../support/whatsapp";

const cleanups = cleanupsAfterEach();

const setup = (env: Record<string, string> = {}, outbox = {}) => outboxSetup(cleanups, env, outbox);

interface Row {
  message_id: string;
  state: string;
  attempts: number;
  recipient: string | null;
  body: string | null;
  reply: string | null;
  reply_message_id: string | null;
  conversation_id: string | null;
  last_error: string | null;
  lease_owner: string | null;
  sender_hash: string;
}

/** The outbox's rows, each message id read back from its key (the file holds no id of Meta's). */
const rows = (target: TestApp) =>
  target.db.$client
    .query<Row, []>("SELECT * FROM whatsapp_outbox ORDER BY id")
    .all()
    .map((row) => ({ ...row, message_id: sentId(target, row.message_id) }));

const audited = auditedEvents;

/** Stops the worker 100 ms into a drain whose chat turn is still running. */
async function stopDuringTurn(worker: OutboxSetup["worker"]): Promise<void> {
  const running = worker.drain();
  await Bun.sleep(100);
  await worker.stop();
  await running;
}

/** Another process on the file sends the reply kept on the row, with no chat turn of its own. */
async function expectNextProcessSendsKeptReply({
  target,
  graph,
  clock,
}: Pick<OutboxSetup, "target" | "graph" | "clock">): Promise<void> {
  const nextChat = await drainInNextProcess(cleanups, { target, graph, clock });
  expect(nextChat.turns).toHaveLength(0);
  expect(graph.sent.map((m) => m.body)).toEqual(["reply to: hello"]);
  expect(rows(target)[0]).toMatchObject({ state: "sent" });
}

describe("sending replies", () => {
  test("a text gets one chat turn and one Graph message; the row is marked sent and the number cleared", async () => {
    const { target, graph, chat, worker } = setup();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.T1", from: "16505551234", text: "hi" }] }),
    );
    expect(await worker.drain()).toBe(1);
    expect(graph.sent).toHaveLength(1);
    expect(graph.sent[0]).toMatchObject({
      phoneNumberId: WA_PHONE_NUMBER_ID,
      to: "16505551234",
      body: "reply to: hi",
      authorization: `Bearer ${graph.token}`,
    });
    const [row] = rows(target);
    expect(row).toMatchObject({
      state: "sent",
      attempts: 1,
      recipient: null,
      body: null,
      reply: "reply to: hi",
      reply_message_id: storedId(target, graph.sent[0]!.id),
      lease_owner: null,
    });
    expect(chat.turns).toHaveLength(1);
    expect(chat.turns[0]!.owner).toEqual({ kind: "whatsapp", id: row!.sender_hash });
    expect(chat.turns[0]!.conversationId).toBeUndefined();
    // Nothing is left to do: a second run sends nothing.
    expect(await worker.drain()).toBe(0);
    expect(graph.sent).toHaveLength(1);
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('whatsapp_replies_total{outcome="sent"} 1');
    expect(metrics).toContain("whatsapp_outbox_pending 0");
  });

  test("rows whose ids the file moved past 2^53 are each answered once and marked sent as themselves (probe 52a F2)", async () => {
    const { target, graph, chat, worker } = setup();
    const senders = ["16505551001", "16505551002", "16505551003"];
    for (const [i, from] of senders.entries()) {
      await deliver(
        target,
        notification({ messages: [{ id: `wamid.MOVED${i}`, from, text: `hello ${i}` }] }),
      );
    }
    // Ids JavaScript reads rounded: 2^53 + 1 and 2^53 + 3 read as 2^53 + 0 and 2^53 + 4.
    for (const [i, id] of [9007199254740993n, 9007199254740994n, 9007199254740995n].entries()) {
      target.db.$client
        .query("UPDATE whatsapp_outbox SET id = ?1 WHERE message_id = ?2")
        .run(id, storedId(target, `wamid.MOVED${i}`));
    }
    expect(await worker.drain()).toBe(3);
    expect(graph.sent.map((m) => [m.to, m.body]).sort()).toEqual(
      senders.map((to, i) => [to, `reply to: hello ${i}`]),
    );
    expect(chat.turns).toHaveLength(3);
    expect(rows(target).map((row) => [row.message_id, row.state, row.lease_owner])).toEqual([
      ["wamid.MOVED0", "sent", null],
      ["wamid.MOVED1", "sent", null],
      ["wamid.MOVED2", "sent", null],
    ]);
    expect(await worker.drain()).toBe(0);
    expect(graph.sent).toHaveLength(3);
  });

  test("Graph 500 then success: one message sent, the same text, one chat turn", async () => {
    const { target, graph, chat, clock, worker } = setup();
    graph.failNext({ status: 500 }, { status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.R1", from: "16505551234", text: "hi" }] }),
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(0);
    expect(rows(target)[0]).toMatchObject({ state: "pending", attempts: 1, reply: "reply to: hi" });
    // Not due yet: the backoff holds it back.
    expect(await worker.drain()).toBe(0);
    clock.advance(1300);
    await worker.drain();
    expect(rows(target)[0]).toMatchObject({ state: "pending", attempts: 2 });
    clock.advance(2600);
    await worker.drain();
    expect(graph.received.map((r) => r.status)).toEqual([500, 503, 200]);
    expect(new Set(graph.received.map((r) => r.body))).toEqual(new Set(["reply to: hi"]));
    expect(graph.sent).toHaveLength(1);
    expect(chat.turns).toHaveLength(1);
    expect(rows(target)[0]).toMatchObject({ state: "sent", attempts: 3, recipient: null });
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('whatsapp_replies_total{outcome="retried"} 2');
  });

  test("a 429 with Retry-After waits at least that long", async () => {
    const { target, graph, clock, worker } = setup();
    graph.failNext({ status: 429, code: 130429, headers: { "retry-after": "30" } });
    await deliver(target, notification({ messages: [{ id: "wamid.RA", from: "16505551234" }] }));
    await worker.drain();
    clock.advance(20_000);
    expect(await worker.drain()).toBe(0);
    clock.advance(11_000);
    await worker.drain();
    expect(graph.sent).toHaveLength(1);
  });

  test("a permanent 4xx gives up at once: failed, number cleared, audited", async () => {
    const { target, graph, clock, worker } = setup();
    graph.failNext({ status: 400, code: 131026 });
    await deliver(target, notification({ messages: [{ id: "wamid.P1", from: "16505551234" }] }));
    await worker.drain();
    clock.advance(60 * 60_000);
    await worker.drain();
    expect(graph.received).toHaveLength(1);
    expect(graph.sent).toHaveLength(0);
    expect(rows(target)[0]).toMatchObject({ state: "failed", recipient: null, body: null });
    expect(rows(target)[0]!.last_error).toContain("131026");
    const [event] = audited(target, "whatsapp.reply_failed");
    expect(event.reason).toContain("graph 400 code 131026");
    expect(event.actor).toBe(`whatsapp:${rows(target)[0]!.sender_hash}`);
  });

  test("a refusal whose text quotes the app secret keeps it out of last_error and the audit (probe 29c F4)", async () => {
    const { target, graph, worker } = setup();
    graph.failNext({
      status: 400,
      code: 131026,
      message: `(#131026) undeliverable; request signed with ${WA_APP_SECRET}`,
    });
    await deliver(target, notification({ messages: [{ id: "wamid.SEC", from: "16505551234" }] }));
    await worker.drain();
    expect(rows(target)[0]).toMatchObject({ state: "failed" });
    expect(rows(target)[0]!.last_error).toContain(
      "(#131026) undeliverable; request signed with [redacted]",
    );
    const [event] = audited(target, "whatsapp.reply_failed");
    expect(JSON.stringify(event)).not.toContain(WA_APP_SECRET);
    expect(rows(target)[0]!.last_error).not.toContain(WA_APP_SECRET);
  });

  test("a refusal whose text quotes the number or the reply keeps both out of last_error, the audit and the log once the number is cleared (probe 59b F2)", async () => {
    const { target, graph, clock, worker } = setup();
    const echo = "Service unavailable for request to=16505551234 text='reply to: hello there'";
    graph.failNext(
      { status: 503, code: 2, message: echo },
      { status: 400, code: 131026, message: `(#131026) ${echo}` },
    );
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.ECHO", from: "16505551234", text: "hello there" }] }),
    );
    await worker.drain();
    clock.advance(1300);
    await worker.drain();
    expect(graph.received.map((r) => r.status)).toEqual([503, 400]);
    const [row] = rows(target);
    expect(row).toMatchObject({ state: "failed", recipient: null });
    expect(row!.last_error).toBe(
      "graph 400 code 131026: (#131026) Service unavailable for request to=[number] text='[text]'",
    );
    const [event] = audited(target, "whatsapp.reply_failed");
    const retried = target.logs.entries.find((e) => e.msg === "whatsapp reply failed; will retry");
    for (const kept of [JSON.stringify(event), JSON.stringify(retried), target.logs.text]) {
      expect(kept).not.toContain("16505551234");
      expect(kept).not.toContain("reply to: hello");
    }
    expect(String(retried?.reason)).toContain("to=[number] text='[text]'");
  });

  test("a refused access token is retried, not given up at once: a token fixed in time loses nothing (probe 26g)", async () => {
    const { target, graph, clock, worker } = setup();
    graph.failNext({ status: 401, code: 190 }, { status: 401, code: 190 });
    await deliver(target, notification({ messages: [{ id: "wamid.TOK", from: "16505551234" }] }));
    await worker.drain();
    expect(rows(target)[0]).toMatchObject({ state: "pending", attempts: 1 });
    expect(rows(target)[0]!.last_error).toStartWith("access token refused (WHATSAPP_ACCESS_TOKEN)");
    for (let i = 0; i < 10 && rows(target)[0]!.state === "pending"; i++) {
      clock.advance(5_000);
      await worker.drain();
    }
    expect(graph.received.map((r) => r.status)).toEqual([401, 401, 200]);
    expect(rows(target)[0]!.state).toBe("sent");
    expect(graph.sent).toHaveLength(1);
    expect(audited(target, "whatsapp.reply_failed")).toHaveLength(0);
  });

  test("a wrong access token that stays wrong is given up at the bounded time, saying why", async () => {
    const { target, graph, clock, worker } = setup(
      { WHATSAPP_ACCESS_TOKEN: "wrong-token" },
      { giveUpAfterMs: 10_000 },
    );
    await deliver(target, notification({ messages: [{ id: "wamid.TOK2", from: "16505551234" }] }));
    for (let i = 0; i < 20 && rows(target)[0]!.state === "pending"; i++) {
      await worker.drain();
      clock.advance(2500);
    }
    expect(graph.received.length).toBeGreaterThan(1);
    expect(graph.received.every((r) => r.status === 401)).toBe(true);
    expect(rows(target)[0]).toMatchObject({ state: "failed", recipient: null, body: null });
    const [event] = audited(target, "whatsapp.reply_failed");
    expect(event.reason).toContain("gave up after");
    expect(event.reason).toContain("access token refused");
  });

  test("transient failures past the bounded time give up with an audit event", async () => {
    const { target, graph, clock, worker } = setup({}, { giveUpAfterMs: 10_000 });
    graph.failNext(...Array.from({ length: 50 }, () => ({ status: 502 })));
    await deliver(target, notification({ messages: [{ id: "wamid.G1", from: "16505551234" }] }));
    for (let i = 0; i < 20 && rows(target)[0]!.state === "pending"; i++) {
      await worker.drain();
      clock.advance(2500);
    }
    const [row] = rows(target);
    expect(row).toMatchObject({ state: "failed", recipient: null });
    expect(row!.attempts).toBeGreaterThan(2);
    expect(graph.sent).toHaveLength(0);
    const events = audited(target, "whatsapp.reply_failed");
    expect(events).toHaveLength(1);
    expect(events[0].reason).toContain("gave up after");
    // The network being down is transient too: a closed port is retried, then given up.
  });

  test("an unreachable Graph API is retried, not given up at once", async () => {
    const { target, graph, clock, worker } = setup();
    graph.close();
    await deliver(target, notification({ messages: [{ id: "wamid.NET", from: "16505551234" }] }));
    await worker.drain();
    expect(rows(target)[0]).toMatchObject({ state: "pending", attempts: 1 });
    expect(rows(target)[0]!.last_error).toStartWith("network");
    clock.advance(1500);
    await worker.drain();
    expect(rows(target)[0]).toMatchObject({ state: "pending", attempts: 2 });
  });

  test("a message not answered within the give-up time of its arrival is given up: no late turn, no late reply (probe 28d F3)", async () => {
    const { target, graph, chat, clock, worker } = setup();
    await deliver(target, notification({ messages: [{ id: "wamid.L1", from: "16505551234" }] }));
    // No worker ran for a day (the service was down after accepting it).
    clock.advance(24 * 60 * 60_000);
    await worker.drain();
    expect(chat.turns).toHaveLength(0);
    expect(graph.received).toHaveLength(0);
    expect(rows(target)[0]).toMatchObject({ state: "failed", recipient: null, body: null });
    expect(audited(target, "whatsapp.reply_failed")[0].reason).toBe(
      "not answered within the give-up time of its arrival",
    );
  });

  test("a non-text message gets the polite fixed reply without a chat turn", async () => {
    const { target, graph, chat, worker } = setup();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.IMG", from: "16505551234", type: "audio" }] }),
    );
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual([NON_TEXT_REPLY]);
    expect(chat.turns).toHaveLength(0);
  });
});

describe("refused texts", () => {
  test("a text the chat message rules refuse gets the polite fixed reply without a chat turn", async () => {
    const { target, graph, chat, worker } = setup();
    for (const [i, text] of ["\u3164", "a\u0000b", "é".repeat(4001)].entries()) {
      await deliver(
        target,
        notification({ messages: [{ id: `wamid.R${i}`, from: "16505551234", text }] }),
      );
    }
    const payload = JSON.stringify(
      notification({ messages: [{ id: "wamid.LONE", from: "16505551234", text: "PLACEHOLDER" }] }),
    ).replace('"PLACEHOLDER"', '"hello \\ud800 world"');
    await deliver(target, payload, { signature: sign(payload) });
    while ((await worker.drain()) > 0) {}
    await graph.waitForSent(4);
    expect(graph.sent.map((m) => m.body)).toEqual(Array(4).fill(REFUSED_TEXT_REPLY));
    expect(chat.turns).toHaveLength(0);
  });
});

describe("chat turns", () => {
  test("a turn's request id, which chat logs and audits, names the outbox row, never Meta's message id that holds the number (probe 86a F2)", async () => {
    const { target, chat, worker } = setup();
    // As Meta spells one: base64 of the sender's number among other bytes.
    const messageId = `wamid.${Buffer.from("\u0018\u000b16505551234\u0015\u0002").toString("base64")}`;
    await deliver(
      target,
      notification({ messages: [{ id: messageId, from: "16505551234", text: "one" }] }),
    );
    await worker.drain();
    const [row] = target.db.$client.query("SELECT id FROM whatsapp_outbox").all() as {
      id: number;
    }[];
    expect(chat.turns.map((turn) => turn.requestId)).toEqual([`whatsapp-outbox-${row!.id}`]);
  });

  test("a sender's conversation is continued; a vanished one starts anew", async () => {
    const { target, chat, worker } = setup();
    const from = "16505551234";
    await deliver(target, notification({ messages: [{ id: "wamid.C1", from, text: "one" }] }));
    await worker.drain();
    await deliver(target, notification({ messages: [{ id: "wamid.C2", from, text: "two" }] }));
    await worker.drain();
    expect(chat.turns.map((t) => t.conversationId)).toEqual([undefined, "conv-1"]);
    chat.script.push({ kind: "not_found" });
    await deliver(target, notification({ messages: [{ id: "wamid.C3", from, text: "three" }] }));
    await worker.drain();
    expect(chat.turns.map((t) => t.conversationId)).toEqual([
      undefined,
      "conv-1",
      "conv-1",
      undefined,
    ]);
    expect(rows(target).map((r) => r.conversation_id)).toEqual(["conv-1", "conv-1", "conv-2"]);
    // Another sender has a conversation of its own.
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.C4", from: "16505559999", text: "x" }] }),
    );
    await worker.drain();
    expect(chat.turns.at(-1)!.conversationId).toBeUndefined();
  });

  test("a spent budget gets the fixed notice; an unavailable chat is retried, then answered", async () => {
    const { target, graph, chat, clock, worker } = setup();
    chat.script.push({ kind: "over_budget", retryAfterSeconds: 3600 });
    await deliver(target, notification({ messages: [{ id: "wamid.B1", from: "16505551234" }] }));
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual([OVER_BUDGET_REPLY]);

    chat.script.push(new UpstreamFailure("unavailable", "circuit open"));
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.B2", from: "16505550000", text: "q" }] }),
    );
    await worker.drain();
    expect(rows(target)[1]).toMatchObject({ state: "pending", reply: null, body: "q" });
    expect(rows(target)[1]!.last_error).toContain("circuit open");
    clock.advance(1500);
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual([OVER_BUDGET_REPLY, "reply to: q"]);

    // The sender's earlier turns still in flight (CHAT_MAX_CONCURRENT_TURNS): waits, never lost.
    chat.script.push({ kind: "too_many_turns" });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.B3", from: "16505550001", text: "later" }] }),
    );
    await worker.drain();
    expect(rows(target)[2]).toMatchObject({ state: "pending", reply: null, body: "later" });
    expect(rows(target)[2]!.last_error).toContain("too many turns in flight");
    clock.advance(1500);
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual([
      OVER_BUDGET_REPLY,
      "reply to: q",
      "reply to: later",
    ]);
  });

  test("a text the chat model refuses for what it holds gets the fixed notice at once, not retried", async () => {
    const { target, graph, chat, worker } = setup();
    const from = "16505551234";
    await deliver(target, notification({ messages: [{ id: "wamid.R1", from, text: "one" }] }));
    await worker.drain();
    chat.script.push({ kind: "refused" });
    await deliver(target, notification({ messages: [{ id: "wamid.R2", from, text: "two" }] }));
    await worker.drain();
    await graph.waitForSent(2);
    expect(graph.sent.map((m) => m.body)).toEqual(["reply to: one", UPSTREAM_REFUSED_REPLY]);
    expect(chat.turns.map((t) => t.message)).toEqual(["one", "two"]);
    expect(rows(target).map((r) => [r.state, r.attempts, r.conversation_id])).toEqual([
      ["sent", 1, "conv-1"],
      ["sent", 1, "conv-1"],
    ]);
    // The conversation goes on with the next message.
    await deliver(target, notification({ messages: [{ id: "wamid.R3", from, text: "three" }] }));
    await worker.drain();
    expect(chat.turns.at(-1)!.conversationId).toBe("conv-1");
  });

  test("one sender's messages are answered in order, one at a time", async () => {
    const { target, graph, chat, clock, worker } = setup();
    const from = "16505551234";
    graph.failNext({ status: 500 });
    await deliver(
      target,
      notification({
        messages: [
          { id: "wamid.O1", from, text: "first" },
          { id: "wamid.O2", from, text: "second" },
        ],
      }),
    );
    // The first fails and waits; the second is not answered before it.
    await worker.drain();
    expect(chat.turns.map((t) => t.message)).toEqual(["first"]);
    clock.advance(1500);
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual(["reply to: first", "reply to: second"]);
  });
});

describe("leases", () => {
  test("a row claimed by a worker that died is taken again only once its lease expired", async () => {
    const { target, graph, clock, worker } = setup();
    await deliver(target, notification({ messages: [{ id: "wamid.L1", from: "16505551234" }] }));
    // Another process claims the row and dies before doing anything with it.
    const other = anotherInstance(target, {
      clock,
      env: whatsappEnv(graph),
      whatsapp: { chat: new ScriptedChat() },
    });
    cleanups.push(() => other.close());
    expect(whatsappOf(other.services).worker.claim(clock.now())).toHaveLength(1);
    expect(await worker.drain()).toBe(0);
    clock.advance(worker.settings.leaseMs - 1000);
    expect(await worker.drain()).toBe(0);
    clock.advance(2000);
    expect(await worker.drain()).toBe(1);
    expect(graph.sent).toHaveLength(1);
  });

  test("a worker whose lease was taken over does not send", async () => {
    const { target, graph, chat, clock, worker } = setup({}, { chatTimeoutMs: 120_000 });
    await deliver(target, notification({ messages: [{ id: "wamid.L2", from: "16505551234" }] }));
    // The chat turn outlives the lease (a stalled process); another worker takes the row over.
    chat.delayMs = 200;
    const slow = worker.drain();
    await Bun.sleep(50);
    clock.advance(worker.settings.leaseMs + 1);
    const other = anotherInstance(target, {
      clock,
      env: whatsappEnv(graph),
      whatsapp: { chat: new ScriptedChat() },
    });
    cleanups.push(() => other.close());
    await whatsappOf(other.services).worker.drain();
    await slow;
    expect(graph.sent).toHaveLength(1);
    expect(rows(target)[0]!.state).toBe("sent");
  });

  test("two processes' workers on one file never send the same reply twice", async () => {
    const generous = {
      RATE_LIMIT_WEBHOOKS: "1000",
      RATE_LIMIT_PER_MINUTE: "1000",
      RATE_LIMIT_BURST: "1000",
    };
    const { target, graph, worker } = setup(generous);
    const other = anotherInstance(target, {
      env: whatsappEnv(graph, generous),
      whatsapp: { chat: new ScriptedChat(), outbox: { batchSize: 3 } },
    });
    cleanups.push(() => other.close());
    const otherWorker = whatsappOf(other.services).worker;
    graph.delayMs = 5;
    const count = 60;
    await Promise.all(
      Array.from({ length: count }, (_, i) =>
        deliver(
          i % 2 ? target : other,
          notification({
            messages: [
              { id: `wamid.MP${i}`, from: `1650555${String(i).padStart(4, "0")}`, text: `m${i}` },
            ],
          }),
        ),
      ),
    );
    const [a, b] = await Promise.all([worker.drain(), otherWorker.drain(), worker.drain()]);
    expect(graph.sent).toHaveLength(count);
    expect(new Set(graph.sent.map((m) => m.to)).size).toBe(count);
    expect(graph.received).toHaveLength(count);
    // Both did part of the work.
    expect(a! + b!).toBeLessThanOrEqual(count);
    expect(rows(target).every((r) => r.state === "sent")).toBe(true);
  });
});

describe("running with the app", () => {
  test("once started, an accepted message is answered without waiting for the poll", async () => {
    const { target, graph, worker } = setup({}, { pollIntervalMs: 60_000 });
    await target.services.start();
    expect(worker.started).toBe(true);
    await deliver(target, notification({ messages: [{ id: "wamid.K1", from: "16505551234" }] }));
    await graph.waitForSent(1, 3000);
    await target.services.stop();
    expect(rows(target)[0]!.state).toBe("sent");
  });

  test("a database locked by another connection is said once, not an error a run, and the reply goes once it is free (probe 27e F3)", async () => {
    const { target, graph, worker } = setup({}, { pollIntervalMs: 60_000 });
    await deliver(target, notification({ messages: [{ id: "wamid.L1", from: "16505551234" }] }));
    const { Database } = await import("bun:sqlite");
    const other = new Database(target.databasePath);
    other.run("BEGIN IMMEDIATE");
    await target.services.start();
    for (let i = 0; i < 5; i++) {
      worker.kick();
      await Bun.sleep(80);
    }
    const outboxLines = () =>
      target.logs.entries.filter((entry) => String(entry.msg).startsWith("whatsapp outbox"));
    expect(outboxLines().map((entry) => [entry.level, entry.msg])).toEqual([
      ["warn", "whatsapp outbox deferred: the database is locked; replies wait until it is free"],
    ]);
    other.run("COMMIT");
    other.close();
    worker.kick();
    await graph.waitForSent(1, 3000);
    await target.services.stop();
    expect(rows(target)[0]!.state).toBe("sent");
  });

  test("a reply Graph accepted while another connection holds the write lock is marked once the lock goes, and not sent again (probe 27g F1)", async () => {
    const { target, graph, clock, worker } = setup();
    await deliver(target, notification({ messages: [{ id: "wamid.M1", from: "16505551234" }] }));
    graph.delayMs = 300;
    const { Database } = await import("bun:sqlite");
    const other = new Database(target.databasePath);
    const running = worker.drain();
    // Taken while the send is in flight (Graph answers after 300 ms): the mark meets it, past the
    // connection's 50 ms.
    await Bun.sleep(100);
    expect(graph.received).toHaveLength(0);
    other.run("BEGIN IMMEDIATE");
    await graph.waitForSent(1, 3000);
    await Bun.sleep(600);
    other.run("COMMIT");
    other.close();
    await running;
    expect(rows(target)[0]).toMatchObject({ state: "sent", lease_owner: null });
    clock.advance(120_000);
    await worker.drain();
    expect(graph.sent).toHaveLength(1);
    expect(
      target.logs.entries.filter((entry) => entry.msg === "whatsapp outbox row failed"),
    ).toEqual([]);
  });

  test("a send Graph refused while another connection holds the write lock is recorded once the lock goes: a transient one retried with its reason logged, a permanent one given up, never sent again", async () => {
    for (const [answer, state] of [
      [{ status: 500, code: 2 }, "pending"],
      [{ status: 400, code: 131026 }, "failed"],
    ] as const) {
      const { target, graph, worker } = setup();
      await deliver(target, notification({ messages: [{ id: "wamid.F1", from: "16505551234" }] }));
      graph.failNext(answer);
      graph.delayMs = 300;
      const { Database } = await import("bun:sqlite");
      const other = new Database(target.databasePath);
      const running = worker.drain();
      await Bun.sleep(100);
      other.run("BEGIN IMMEDIATE");
      await graph.waitForRequests(1, 3000);
      await Bun.sleep(600);
      other.run("COMMIT");
      other.close();
      await running;
      const [row] = rows(target);
      expect([answer.status, row!.state, row!.lease_owner]).toEqual([answer.status, state, null]);
      expect(row!.last_error).toContain(String(answer.code));
      expect(
        target.logs.entries.filter((entry) => entry.msg === "whatsapp outbox row failed"),
      ).toEqual([]);
      if (state === "pending") {
        expect(
          target.logs.entries.some((entry) => entry.msg === "whatsapp reply failed; will retry"),
        ).toBe(true);
      }
    }
  });

  test("a reply ready while another connection holds the write lock is stored once the lock goes: one chat turn, one send (probe 27h F3)", async () => {
    const { target, graph, chat, clock, worker } = setup();
    await deliver(target, notification({ messages: [{ id: "wamid.R1", from: "16505551234" }] }));
    chat.delayMs = 300;
    const { Database } = await import("bun:sqlite");
    const other = new Database(target.databasePath);
    const running = worker.drain();
    // Taken while the turn runs: storing its reply meets it.
    await Bun.sleep(100);
    expect(chat.turns).toHaveLength(1);
    other.run("BEGIN IMMEDIATE");
    await Bun.sleep(700);
    other.run("COMMIT");
    other.close();
    await running;
    clock.advance(120_000);
    await worker.drain();
    expect(chat.turns).toHaveLength(1);
    expect(graph.sent).toHaveLength(1);
    expect(rows(target)[0]).toMatchObject({ state: "sent" });
  });

  test("a stop lets a turn in flight finish (an aborted one was charged and run again): its reply is kept and the next process sends it without a second turn (probe 28d F1)", async () => {
    const { target, graph, chat, clock, worker } = setup();
    await deliver(target, notification({ messages: [{ id: "wamid.T0", from: "16505551234" }] }));
    // The scripted chat gives up at an abort, as the real one does while its upstream answers.
    chat.delayMs = 300;
    await stopDuringTurn(worker);
    expect(chat.turns).toHaveLength(1);
    expect(graph.sent).toHaveLength(0);
    expect(rows(target)[0]).toMatchObject({ state: "pending", reply: "reply to: hello" });
    await expectNextProcessSendsKeptReply({ target, graph, clock });
  });

  test("a turn that finishes as the worker stops keeps its reply: the next process sends it without a second turn (probe 28c F1)", async () => {
    // Past the stop's grace: the abort comes, and this turn (its upstream had answered) ends anyway.
    const { target, graph, chat, clock, worker } = setup({}, { stopTurnGraceMs: 50 });
    await deliver(target, notification({ messages: [{ id: "wamid.T1", from: "16505551234" }] }));
    chat.delayMs = 300;
    chat.completesDespiteAbort = true;
    await stopDuringTurn(worker);
    expect(chat.turns).toHaveLength(1);
    expect(graph.sent).toHaveLength(0);
    expect(rows(target)[0]).toMatchObject({
      state: "pending",
      reply: "reply to: hello",
      lease_owner: null,
    });
    await expectNextProcessSendsKeptReply({ target, graph, clock });
  });

  test("the worker stops claiming once the maintenance finds the schema changed, not only after the drain (probe 28c F1)", async () => {
    const { target, graph, chat } = setup({}, { pollIntervalMs: 60_000 });
    const { services } = servicesTold(target, {
      whatsapp: { chat, outbox: { pollIntervalMs: 60_000 } },
    });
    cleanups.push(() => services.close());
    await services.start();
    const worker = whatsappOf(services).worker;
    expect(worker.started).toBe(true);
    target.db.$client.run("ALTER TABLE whatsapp_outbox ADD `note` text");
    services.runMaintenance();
    expect(worker.started).toBe(false);
    // A message accepted during the drain waits for the next process.
    await deliver(target, notification({ messages: [{ id: "wamid.U1", from: "16505551234" }] }));
    worker.kick();
    await Bun.sleep(50);
    expect(chat.turns).toHaveLength(0);
    expect(graph.sent).toHaveLength(0);
  });

  test("stop() lets a send in flight finish and be marked sent", async () => {
    const { target, graph, worker } = setup({}, { pollIntervalMs: 60_000 });
    await target.services.start();
    graph.delayMs = 300;
    await deliver(target, notification({ messages: [{ id: "wamid.S1", from: "16505551234" }] }));
    await Bun.sleep(100);
    await target.services.stop();
    expect(worker.started).toBe(false);
    expect(graph.sent).toHaveLength(1);
    expect(rows(target)[0]).toMatchObject({ state: "sent", lease_owner: null });
  });

  test("as wired in the feature list, the chat feature answers each sender in one conversation of its own", async () => {
    const graph = startGraphServer();
    cleanups.push(() => graph.close());
    const target = buildTestApp({ env: whatsappEnv(graph) });
    cleanups.push(() => target.close());
    const worker = whatsappOf(target.services).worker;
    const text = "What is Palisade?";
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.W1", from: "16505551234", text }] }),
    );
    await worker.drain();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.W2", from: "16505551234", text }] }),
    );
    await worker.drain();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.W3", from: "4915112345678", text }] }),
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(3);
    // The offline provider's FAQ answer, not a fixed notice.
    expect(graph.sent[0]!.body).toContain("Palisade");
    expect(graph.sent[0]!.body).not.toContain("not available on WhatsApp");
    const sqlite = target.db.$client;
    const conversations = sqlite
      .query("SELECT owner_kind, owner_id FROM chat_conversations ORDER BY created_at, id")
      .all() as { owner_kind: string; owner_id: string }[];
    // Two senders, two conversations; the first sender's second message continued the first.
    expect(conversations).toHaveLength(2);
    expect(conversations.every((c) => c.owner_kind === "whatsapp")).toBe(true);
    expect(new Set(conversations.map((c) => c.owner_id)).size).toBe(2);
    // Owned by a keyed hash of the number, never the number itself.
    for (const c of conversations) expect(c.owner_id).not.toContain("16505551234");
    const { n } = sqlite.query("SELECT count(*) AS n FROM chat_messages").get() as { n: number };
    expect(n).toBe(6);
  });

  test("without an access token the worker does not start and messages wait", async () => {
    const graph = startGraphServer();
    cleanups.push(() => graph.close());
    const target = buildTestApp({
      env: whatsappEnv(null),
      whatsapp: { chat: new ScriptedChat() },
    });
    cleanups.push(() => target.close());
    await target.services.start();
    expect(whatsappOf(target.services).worker.started).toBe(false);
    expect(target.logs.text).toContain("WHATSAPP_ACCESS_TOKEN is not");
    await target.services.stop();
  });
});

/** The app with its WhatsApp webhook on but no WHATSAPP_ACCESS_TOKEN: no worker runs. */
async function withoutAccessToken() {
  const graph = startGraphServer();
  cleanups.push(() => graph.close());
  const { WHATSAPP_ACCESS_TOKEN: _token, ...withoutToken } = whatsappEnv(graph);
  const clock = new ManualClock();
  const chat = new ScriptedChat();
  const target = buildTestApp({ env: withoutToken, clock, whatsapp: { chat } });
  cleanups.push(() => target.close());
  await target.services.start();
  return { graph, clock, chat, target };
}

test("without WHATSAPP_ACCESS_TOKEN a kept message is given up at the maintenance after its give-up time, its number and text cleared, not kept past retention (probe 81a F3)", async () => {
  const { graph, clock, chat, target } = await withoutAccessToken();
  const response = await deliver(
    target,
    notification({ messages: [{ id: "wamid.KEPT", from: "16505550123", text: "hello?" }] }),
  );
  expect(response.status).toBe(200);
  // Within its give-up time it is kept for a token set meanwhile.
  clock.advance(14 * 60_000);
  target.services.runMaintenance();
  expect(rows(target)[0]).toMatchObject({ state: "pending", recipient: "16505550123" });
  clock.advance(60_000);
  target.services.runMaintenance();
  expect(rows(target)[0]).toMatchObject({
    state: "failed",
    recipient: null,
    body: null,
    last_error:
      "not answered within the give-up time of its arrival: no reply is sent while WHATSAPP_ACCESS_TOKEN is unset",
  });
  // Given up as a worker gives a row up: audited, resealed (no tampering reported), nothing sent.
  expect(audited(target, "whatsapp.reply_failed")).toHaveLength(1);
  expect(audited(target, "whatsapp.outbox_tampered")).toEqual([]);
  expect(graph.received).toEqual([]);
  expect(chat.turns).toHaveLength(0);
  // And pruned with the other finished rows once retention has passed.
  clock.advance(31 * 24 * 60 * 60_000);
  target.services.runMaintenance();
  expect(rows(target)).toEqual([]);
});

/**
 * The worker running, and sender 16505550001's "slow essay" in hand: its chat turn waits until
 * `release` is called.
 */
async function slowTurnInHand() {
  const world = setup();
  let release = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  let slowStarted = false;
  const converse = world.chat.converse.bind(world.chat);
  world.chat.converse = async (input) => {
    if (input.message.startsWith("slow")) {
      slowStarted = true;
      await held;
    }
    return converse(input);
  };
  world.worker.start();
  await deliver(
    world.target,
    notification({ messages: [{ id: "wamid.SLOW", from: "16505550001", text: "slow essay" }] }),
  );
  while (!slowStarted) await Bun.sleep(5);
  return { world, release };
}

/** Two other senders' messages (and `more`), their replies sent while the slow turn is held. */
async function othersAnsweredMeanwhile(world: OutboxSetup, more: InboundMessage[] = []) {
  await deliver(
    world.target,
    notification({
      messages: [
        { id: "wamid.B1", from: "16505550002", text: "b one" },
        { id: "wamid.C1", from: "16505550003", text: "c one" },
        ...more,
      ],
    }),
  );
  await world.graph.waitForSent(2, 5_000);
  expect(world.graph.sent.map((message) => message.body).sort()).toEqual([
    "reply to: b one",
    "reply to: c one",
  ]);
}

test("one sender's slow chat turn holds no other sender's reply: those that come meanwhile are answered while it runs, each sender in order (probe 81a F2)", async () => {
  const { world, release } = await slowTurnInHand();
  // The slow sender's next message waits for its first: one conversation, in order.
  await othersAnsweredMeanwhile(world, [
    { id: "wamid.SLOW2", from: "16505550001", text: "after the essay" },
  ]);
  release();
  await world.graph.waitForSent(4, 5_000);
  expect(world.graph.sent.map((message) => message.body).slice(2)).toEqual([
    "reply to: slow essay",
    "reply to: after the essay",
  ]);
}, 20_000);

test("a lock another connection held while a slow turn is in hand is waited out: other senders are still answered while the turn runs (probe 81d F1)", async () => {
  const { world, release } = await slowTurnInHand();
  // Held past a poll (every second): at least one claim meets it.
  const other = new Database(world.target.databasePath);
  other.run("BEGIN IMMEDIATE");
  await Bun.sleep(1_300);
  other.run("COMMIT");
  other.close();
  await othersAnsweredMeanwhile(world);
  release();
  await world.graph.waitForSent(3, 5_000);
}, 20_000);

test("without WHATSAPP_ACCESS_TOKEN a kept message whose lease no worker writes (for good, a text) is given up all the same, as a worker's claim takes it", async () => {
  for (const lease of ["9000000000000000000", "'x'"]) {
    const { clock, target } = await withoutAccessToken();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.HELD", from: "16505550124", text: "hi" }] }),
    );
    target.db.$client.run(
      `UPDATE whatsapp_outbox SET lease_until = ${lease}, lease_owner = 'ghost' WHERE message_id = '${storedId(target, "wamid.HELD")}'`,
    );
    clock.advance(16 * 60_000);
    target.services.runMaintenance();
    expect({ lease, row: rows(target)[0] }).toMatchObject({
      lease,
      row: { state: "failed", recipient: null, body: null },
    });
  }
});
