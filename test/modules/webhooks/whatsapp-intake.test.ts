/**
 * What a verified notification leaves in the database: one outbox row and one dedupe record per
 * message id however often (and however concurrently) it is delivered, the sender's limit, status
 * callbacks, and the sender's number kept in clear only on the outbox row.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { CLAIM_LEASE_MS } from "../../../src/modules/webhooks/whatsapp";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { ManualClock } from "../../support/clock";
import { anotherInstance } from "../../support/instance";
import {
  deliver,
  notification,
  ScriptedChat,
  sentId,
  sign,
  storedId,
  WA_PHONE_NUMBER_ID,
  whatsappEnv,
} from "../../support/whatsapp";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function build(env: Record<string, string> = {}) {
  current = buildTestApp({ env: whatsappEnv(null, env), whatsapp: { chat: new ScriptedChat() } });
  return current;
}

interface OutboxView {
  message_id: string;
  phone_number_id: string;
  recipient: string | null;
  sender_hash: string;
  kind: string;
  body: string | null;
  state: string;
}

/** The outbox's rows, each message id read back from its key (the file holds no id of Meta's). */
const outbox = (target: TestApp) =>
  target.db.$client
    .query<OutboxView, []>(
      "SELECT message_id, phone_number_id, recipient, sender_hash, kind, body, state FROM whatsapp_outbox ORDER BY id",
    )
    .all()
    .map((row) => ({ ...row, message_id: sentId(target, row.message_id) }));

/** The dedupe records, by the id each keys. */
const events = (target: TestApp) =>
  target.db.$client
    .query<{ event_id: string; type: string }, []>(
      "SELECT event_id, type FROM webhook_events WHERE provider = 'whatsapp'",
    )
    .all()
    .map((row) => ({ ...row, event_id: sentId(target, row.event_id) }))
    .sort((a, b) => (a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0));

/** The delivery statuses, by the id each names. */
const statuses = (target: TestApp) =>
  target.db.$client
    .query<{ message_id: string; status: string; error_code: number | null }, []>(
      "SELECT message_id, status, error_code FROM whatsapp_statuses",
    )
    .all()
    .map((row) => ({ ...row, message_id: sentId(target, row.message_id) }))
    .sort((a, b) => (`${a.message_id} ${a.status}` < `${b.message_id} ${b.status}` ? -1 : 1));

/**
 * Delivers as Meta does: again while the answer is 503 (a copy that met another delivery's claim
 * still running, probe 43a F1), until it is answered.
 */
async function deliverUntilAnswered(
  target: Parameters<typeof deliver>[0],
  payload: unknown,
): Promise<{ response: Response; tries: number }> {
  for (let tries = 1; ; tries++) {
    const response = await deliver(target, payload);
    if (response.status !== 503 || tries === 50) return { response, tries };
    await Bun.sleep(5);
  }
}

describe("accepting messages", () => {
  test("a text message becomes one outbox row and one dedupe record, the number only on the row", async () => {
    const target = build();
    const from = "16505551234";
    const response = await deliver(
      target,
      notification({ messages: [{ id: "wamid.A1", from, text: "  where is my order?\n " }] }),
    );
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      received: true,
      accepted: 1,
      duplicates: 0,
      statuses: 0,
      ignored: 0,
    });
    const [row] = outbox(target);
    expect(row).toMatchObject({
      message_id: "wamid.A1",
      phone_number_id: WA_PHONE_NUMBER_ID,
      recipient: from,
      kind: "text",
      body: "where is my order?",
      state: "pending",
    });
    expect(row!.sender_hash).toMatch(/^[0-9a-f]{32}$/);
    expect(row!.sender_hash).not.toContain(from);
    expect(events(target)).toEqual([{ event_id: "wamid.A1", type: "message.text" }]);
    // The same number hashes the same way in another process (same AUDIT secret).
    await deliver(target, notification({ messages: [{ id: "wamid.A2", from }] }));
    expect(new Set(outbox(target).map((r) => r.sender_hash)).size).toBe(1);
  });

  test("a redelivered message id adds nothing and is acknowledged 200", async () => {
    const target = build();
    const payload = notification({ messages: [{ id: "wamid.DUP", from: "16505551234" }] });
    expect((await deliver(target, payload)).status).toBe(200);
    const again = await deliver(target, payload);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ accepted: 0, duplicates: 1 });
    expect(outbox(target)).toHaveLength(1);
    expect(events(target)).toHaveLength(1);
  });

  test("concurrent deliveries of one message id, to two processes on one file, leave one row", async () => {
    // Meta's 40 deliveries come from one address: lift the per-address limits for this test.
    const generous = {
      RATE_LIMIT_WEBHOOKS: "1000",
      RATE_LIMIT_PER_MINUTE: "1000",
      RATE_LIMIT_BURST: "1000",
    };
    const target = build(generous);
    const other = anotherInstance(target, {
      env: whatsappEnv(null, generous),
      whatsapp: { chat: new ScriptedChat() },
    });
    try {
      const payloads = Array.from({ length: 5 }, (_, i) =>
        notification({
          messages: Array.from({ length: 4 }, (_, j) => ({
            id: `wamid.C${j}`,
            from: `1650555${String(i * 10 + j).padStart(4, "0")}`,
          })),
        }),
      );
      // 5 different notifications carry the same 4 message ids: 40 deliveries at once.
      const delivered = await Promise.all(
        Array.from({ length: 40 }, (_, k) =>
          deliverUntilAnswered(k % 2 ? other : target, payloads[k % 5]),
        ),
      );
      const responses = delivered.map(({ response }) => response);
      expect(responses.map((r) => r.status)).toEqual(Array(40).fill(200));
      // Each message once, whichever delivery stored it: one answered 503 may have stored some of
      // its messages before meeting another's claim (its count is not in a 200 then).
      expect(
        outbox(target)
          .map((r) => r.message_id)
          .sort(),
      ).toEqual(["wamid.C0", "wamid.C1", "wamid.C2", "wamid.C3"]);
      expect(events(target).map((e) => e.type)).toEqual(Array(4).fill("message.text"));
    } finally {
      other.close();
    }
  });

  test("a non-text message is queued for the fixed reply, without chat", async () => {
    const target = build();
    const response = await deliver(
      target,
      notification({
        messages: [{ id: "wamid.IMG", from: "16505551234", type: "image" }],
      }),
    );
    expect(await response.json()).toMatchObject({ accepted: 1 });
    expect(outbox(target).map((r) => [r.message_id, r.kind, r.body])).toEqual([
      ["wamid.IMG", "unsupported", null],
    ]);
  });

  test("a reaction or a system message is acknowledged and not answered: no row, no fixed reply (probe 81a)", async () => {
    const target = build();
    const response = await deliver(
      target,
      notification({
        messages: [
          { id: "wamid.REACT", from: "16505551234", type: "reaction" },
          { id: "wamid.SYS", from: "16505551234", type: "system" },
          { id: "wamid.STICKER", from: "16505551234", type: "sticker" },
        ],
      }),
    );
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ accepted: 1, ignored: 2 });
    expect(outbox(target).map((r) => [r.message_id, r.kind])).toEqual([
      ["wamid.STICKER", "unsupported"],
    ]);
  });

  test("unusable items are skipped and counted; the rest of the delivery is accepted", async () => {
    const target = build();
    const payload = notification({
      messages: [
        { id: "wamid.OK", from: "16505551234" },
        { id: "wamid.BADFROM", from: "+1 650 555" },
        { id: "bad id with spaces", from: "16505551234" },
      ],
    });
    (payload.entry[0]!.changes as unknown[]).push({ field: "account_update", value: {} });
    const response = await deliver(target, payload);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ accepted: 1, ignored: 3 });
    expect(outbox(target).map((r) => r.message_id)).toEqual(["wamid.OK"]);
    // A phone number id that is not digits would go into the Graph URL: refused.
    const sneaky = notification(
      { messages: [{ id: "wamid.PATH", from: "16505551234" }] },
      "../../me",
    );
    expect(await (await deliver(target, sneaky)).json()).toMatchObject({ accepted: 0, ignored: 1 });
  });

  // One item past a bound used to make its whole change "ignored": the good message beside it was
  // acknowledged with a 200 and lost. Each such item is now skipped alone.
  const unusableItems: [string, Record<string, unknown>][] = [
    [
      "a `from` of 33 digits",
      { id: "wamid.X", from: "1".repeat(33), type: "text", text: { body: "hi" } },
    ],
    [
      "a text over 65,536 characters",
      { id: "wamid.X", from: "16505551235", type: "text", text: { body: "a".repeat(65_537) } },
    ],
    [
      "a text body that is not a string",
      { id: "wamid.X", from: "16505551235", type: "text", text: { body: 42 } },
    ],
    [
      "an id over 256 characters",
      { id: `wamid.${"x".repeat(260)}`, from: "16505551235", type: "text", text: { body: "hi" } },
    ],
    ["a type over 32 characters", { id: "wamid.X", from: "16505551235", type: "t".repeat(33) }],
    ["an item that is not an object", "wamid.X" as unknown as Record<string, unknown>],
  ];
  for (const [name, bad] of unusableItems) {
    test(`a message with ${name} is skipped alone: the good one beside it is accepted`, async () => {
      const target = build();
      const payload = notification({ messages: [{ id: "wamid.GOOD", from: "16505551234" }] });
      const value = payload.entry[0]!.changes[0]!.value as { messages: unknown[] };
      value.messages.push(bad);
      const response = await deliver(target, payload);
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ accepted: 1, ignored: 1 });
      expect(outbox(target).map((r) => r.message_id)).toEqual(["wamid.GOOD"]);
    });
  }

  test("a status past its bounds is skipped alone; bad entries and changes are skipped alone too", async () => {
    const target = build();
    const payload = notification({ statuses: [{ id: "wamid.S1", status: "delivered" }] });
    const value = payload.entry[0]!.changes[0]!.value as { statuses: unknown[] };
    value.statuses.push({ id: "s".repeat(300), status: "read", timestamp: "1" });
    (payload.entry[0]!.changes as unknown[]).push({ field: "f".repeat(65), value: {} }, 7);
    (payload.entry as unknown[]).push({ id: "e".repeat(65), changes: [] }, null);
    const response = await deliver(target, payload);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ statuses: 1, ignored: 5 });
    expect(statuses(target)).toEqual([
      { message_id: "wamid.S1", status: "delivered", error_code: null },
    ]);
  });

  test("a delivery of more than a hundred messages is accepted whole (Meta batches up to 1000)", async () => {
    const target = build();
    const messages = Array.from({ length: 150 }, (_, i) => ({
      id: `wamid.B${i}`,
      from: `1650555${String(i).padStart(4, "0")}`,
    }));
    const response = await deliver(target, notification({ messages }));
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ accepted: 150, ignored: 0 });
    expect(outbox(target)).toHaveLength(150);
  });

  // The same rules as POST /api/chat (test/modules/chat/chat.test.ts), by the same function.
  const refusedTexts: [string, string][] = [
    ["a lone high surrogate", "hello \ud800 world"],
    ["a lone low surrogate", "\udc00"],
    ["NUL", " \u0000 "],
    ["BEL among text", "where is my order?\u0007"],
    ["CR", "line\r\nline"],
    ["a C1 control", "a\u0085b"],
    ["only whitespace", " \t\n "],
    ["only a zero-width space", "\u200b"],
    ["only Hangul fillers", "\u3164\u3164"],
    ["only a blank Braille pattern", "\u2800"],
    ["only joiners and a variation selector", "\u200d\u200c\ufe0f"],
    ["4001 characters", "é".repeat(4001)],
  ];

  test("a text the chat message rules refuse is queued for the fixed notice, never altered for chat", async () => {
    const target = build({ RATE_LIMIT_WEBHOOKS: "1000", RATE_LIMIT_BURST: "1000" });
    for (const [i, [name, text]] of refusedTexts.entries()) {
      // Written by hand: JSON.stringify would escape a lone surrogate as \\udXXX (as Meta does).
      const payload = JSON.stringify(
        notification({
          messages: [{ id: `wamid.R${i}`, from: "16505551234", text: "PLACEHOLDER" }],
        }),
      ).replace('"PLACEHOLDER"', JSON.stringify(text));
      const response = await deliver(target, payload, { signature: sign(payload) });
      expect([name, response.status]).toEqual([name, 200]);
      expect([name, await response.json()]).toMatchObject([name, { accepted: 1 }]);
    }
    const rows = outbox(target);
    expect(rows).toHaveLength(refusedTexts.length);
    for (const row of rows)
      expect([row.message_id, row.kind, row.body]).toEqual([row.message_id, "refused", null]);
    expect(events(target).every((e) => e.type === "message.refused")).toBe(true);
  });

  test("a text at the limits is accepted as /api/chat accepts it: trimmed, 4000 characters, emoji, a visible character among invisible ones", async () => {
    const target = build({ RATE_LIMIT_WEBHOOKS: "1000", RATE_LIMIT_BURST: "1000" });
    const accepted: [string, string][] = [
      [`  ${"é".repeat(4000)}\n`, "é".repeat(4000)],
      ["🙂", "🙂"],
      ["\u200bhi\u200b", "\u200bhi\u200b"],
      ["tab\tand\nnewline", "tab\tand\nnewline"],
    ];
    for (const [i, [text]] of accepted.entries()) {
      await deliver(
        target,
        notification({ messages: [{ id: `wamid.OK${i}`, from: "16505551234", text }] }),
      );
    }
    expect(outbox(target).map((r) => [r.kind, r.body])).toEqual(
      accepted.map(([, stored]) => ["text", stored]),
    );
  });
});

test("an outbox id sequence set past what JavaScript counts exactly refuses the message with the reason, stores nothing and gives the claim back (probe 51a's class)", async () => {
  const target = build();
  target.db.$client.run(
    "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('whatsapp_outbox', 9007199254740992)",
  );
  const response = await deliver(
    target,
    notification({ messages: [{ id: "wamid.PAST53", from: "16505551234" }] }),
  );
  expect(response.status).toBe(500);
  expect(outbox(target)).toEqual([]);
  expect(events(target).filter((e) => e.event_id === "wamid.PAST53")).toEqual([]);
  // The id as the file would hold it (2^53 + 1), not as JavaScript rounds it (probe 52a F3).
  expect(target.logs.text).toContain(
    "the WhatsApp outbox's next id would be 9007199254740993, past any id Palisade writes",
  );
  expect(target.logs.text).toContain("restore the file from a backup");
});

describe("the sender's own limit", () => {
  test("a sender over RATE_LIMIT_WHATSAPP_SENDER gets no reply row and is audited; others are unaffected", async () => {
    const target = build({ RATE_LIMIT_WHATSAPP_SENDER: "3", RATE_LIMIT_WEBHOOKS: "1000" });
    const busy = "16505550001";
    for (let i = 0; i < 5; i++) {
      const response = await deliver(
        target,
        notification({ messages: [{ id: `wamid.L${i}`, from: busy }] }),
      );
      expect(response.status).toBe(200);
    }
    const calm = await deliver(
      target,
      notification({ messages: [{ id: "wamid.CALM", from: "16505550002" }] }),
    );
    expect(await calm.json()).toMatchObject({ accepted: 1 });
    expect(outbox(target).map((r) => r.message_id)).toEqual([
      "wamid.L0",
      "wamid.L1",
      "wamid.L2",
      "wamid.CALM",
    ]);
    // The refused ones are still recorded as seen: a redelivery neither replies nor counts again.
    expect(
      events(target)
        .filter((e) => e.type === "message.limited")
        .map((e) => e.event_id),
    ).toEqual(["wamid.L3", "wamid.L4"]);
    target.services.audit.flush();
    const audited = target.db.$client
      .query<{ actor: string; outcome: string }, []>(
        "SELECT actor, outcome FROM audit_events WHERE type = 'whatsapp.sender_limited'",
      )
      .all();
    // Once a sender and window (probe 50b F4), however many it sent over the limit.
    expect(audited).toHaveLength(1);
    expect(audited[0]!.outcome).toBe("denied");
    expect(audited[0]!.actor).toStartWith("whatsapp:");
    expect(audited[0]!.actor).not.toContain(busy);
    // Keyed per sender, not per address: Meta's one address is not blocked or limited for it.
    const blocks = target.db.$client.query("SELECT * FROM ip_blocks").all();
    expect(blocks).toEqual([]);
  });

  test("a sender flooding the number writes one audit row a window, not one a message; each sender its own, and again the next window (probe 50b F4)", async () => {
    const clock = new ManualClock();
    current = buildTestApp({
      env: whatsappEnv(null, { RATE_LIMIT_WHATSAPP_SENDER: "3", RATE_LIMIT_WEBHOOKS: "1000" }),
      whatsapp: { chat: new ScriptedChat() },
      clock,
    });
    const target = current;
    const limitedRows = () => {
      target.services.audit.flush();
      return target.db.$client
        .query<{ actor: string }, []>(
          "SELECT actor FROM audit_events WHERE type = 'whatsapp.sender_limited' ORDER BY id",
        )
        .all()
        .map((row) => row.actor);
    };
    const flood = async (from: string, label: string, count: number) => {
      const messages = Array.from({ length: count }, (_, i) => ({
        id: `wamid.${label}${i}`,
        from,
      }));
      const response = await deliver(target, notification({ messages }));
      expect(response.status).toBe(200);
      return (await response.json()) as { accepted: number; ignored: number };
    };
    expect(await flood("16505550011", "A", 200)).toMatchObject({ accepted: 3, ignored: 197 });
    expect(await flood("16505550012", "B", 50)).toMatchObject({ accepted: 3, ignored: 47 });
    expect(await flood("16505550011", "C", 50)).toMatchObject({ accepted: 0, ignored: 50 });
    const firstWindow = limitedRows();
    expect(firstWindow).toHaveLength(2);
    expect(new Set(firstWindow).size).toBe(2);
    // Each message is still counted.
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('webhook_events_total{provider="whatsapp",outcome="ignored"} 294');
    // The next window: audited again, once.
    clock.advance(120_000);
    expect(await flood("16505550011", "D", 10)).toMatchObject({ accepted: 3, ignored: 7 });
    const both = limitedRows();
    expect(both).toHaveLength(3);
    expect(both[2]).toBe(firstWindow[0]);
  });
});

describe("redeliveries never spend the sender's limit", () => {
  const generous = {
    RATE_LIMIT_WEBHOOKS: "1000",
    RATE_LIMIT_PER_MINUTE: "1000",
    RATE_LIMIT_BURST: "1000",
    RATE_LIMIT_WHATSAPP_SENDER: "3",
  };
  /** An app on a manual clock whose file holds another delivery's claim of `messageId`, made now. */
  const withClaimStanding = (messageId: string) => {
    const clock = new ManualClock();
    const target = buildTestApp({
      env: whatsappEnv(null, generous),
      whatsapp: { chat: new ScriptedChat() },
      clock,
    });
    current = target;
    target.db.$client.run(
      "INSERT INTO webhook_events (provider, event_id, type, received_at) VALUES ('whatsapp', ?, 'message.claimed', ?)",
      [storedId(target, messageId), clock.now()],
    );
    return { target, clock };
  };
  const accepted = async (response: Response) =>
    ((await response.json()) as { accepted: number }).accepted;

  test("10 concurrent deliveries of one id, to two processes, spend one message of the limit", async () => {
    const target = build(generous);
    const other = anotherInstance(target, {
      env: whatsappEnv(null, generous),
      whatsapp: { chat: new ScriptedChat() },
    });
    try {
      const from = "16505550001";
      const once = notification({ messages: [{ id: "wamid.REDELIVERED", from, text: "hello" }] });
      // Meta redelivers while we are slow: the same id ten times at once, and twice in one body.
      const twice = notification({
        messages: [
          { id: "wamid.REDELIVERED", from, text: "hello" },
          { id: "wamid.REDELIVERED", from, text: "hello" },
        ],
      });
      // A copy that met the first delivery's claim still running is 503 (probe 43a F1), and Meta
      // delivers it again: then it is a duplicate.
      const delivered = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          deliverUntilAnswered(i % 2 ? other : target, i === 9 ? twice : once),
        ),
      );
      const answered = delivered.map(({ response }) => response);
      expect(answered.map((r) => r.status)).toEqual(Array(10).fill(200));
      const bodies = (await Promise.all(answered.map((r) => r.json()))) as {
        accepted: number;
        duplicates: number;
        ignored: number;
      }[];
      expect(bodies.reduce((n, b) => n + b.accepted, 0)).toBe(1);
      expect(bodies.reduce((n, b) => n + b.duplicates, 0)).toBe(10);
      expect(bodies.reduce((n, b) => n + b.ignored, 0)).toBe(0);
      expect(outbox(target).map((r) => r.message_id)).toEqual(["wamid.REDELIVERED"]);
      expect(events(target)).toEqual([{ event_id: "wamid.REDELIVERED", type: "message.text" }]);
      // One message spent of three: the next two new ones are answered, the one after is not.
      const next = (id: string) =>
        deliver(target, notification({ messages: [{ id, from, text: "are you there?" }] }));
      expect(await accepted(await next("wamid.SECOND"))).toBe(1);
      expect(await accepted(await next("wamid.THIRD"))).toBe(1);
      expect(await accepted(await next("wamid.FOURTH"))).toBe(0);
      expect(outbox(target).map((r) => r.message_id)).toEqual([
        "wamid.REDELIVERED",
        "wamid.SECOND",
        "wamid.THIRD",
      ]);
    } finally {
      other.close();
    }
  });

  test("a claim left by a crashed delivery is 503 until its lease ends, never a duplicate, then taken over (probe 43a F1)", async () => {
    // A process died after claiming the id and before writing the record and the outbox row.
    const { target, clock } = withClaimStanding("wamid.CRASH");
    const payload = notification({
      messages: [{ id: "wamid.CRASH", from: "16505550003", text: "hi" }],
    });
    // A 200 would end Meta's redeliveries, and the message would never be answered.
    const early = await deliver(target, payload);
    expect(early.status).toBe(503);
    expect(early.headers.get("retry-after")).toBe("1");
    expect(await early.json()).toMatchObject({ code: "SERVICE_UNAVAILABLE" });
    expect(outbox(target)).toHaveLength(0);
    clock.advance(CLAIM_LEASE_MS - 1);
    expect((await deliver(target, payload)).status).toBe(503);
    clock.advance(2);
    // Meta redelivers (it never got its 200): now the message is accepted, exactly once.
    const delivered = await Promise.all([
      deliverUntilAnswered(target, payload),
      deliverUntilAnswered(target, payload),
    ]);
    const acks = (await Promise.all(delivered.map(({ response }) => response.json()))) as {
      accepted: number;
      duplicates: number;
    }[];
    expect(acks.reduce((n, a) => n + a.accepted, 0)).toBe(1);
    expect(acks.reduce((n, a) => n + a.duplicates, 0)).toBe(1);
    expect(outbox(target).map((r) => r.message_id)).toEqual(["wamid.CRASH"]);
    expect(events(target)).toEqual([{ event_id: "wamid.CRASH", type: "message.text" }]);
  });

  test("a claim the file dates ahead of its lease, or as no time, is taken over at once, not held at 503 (probe 44a)", async () => {
    const anHourAhead = (now: number) => now + 60 * 60_000;
    for (const [id, dated] of [
      ["wamid.AHEAD", anHourAhead],
      ["wamid.TEXT", () => "soon"],
    ] as const) {
      const { target, clock } = withClaimStanding(id);
      target.db.$client.run("UPDATE webhook_events SET received_at = ? WHERE event_id = ?", [
        dated(clock.now()),
        storedId(target, id),
      ]);
      const response = await deliver(
        target,
        notification({ messages: [{ id, from: "16505550008", text: "hi" }] }),
      );
      expect([id, response.status]).toEqual([id, 200]);
      expect(outbox(target).map((r) => r.message_id)).toEqual([id]);
      target.close();
      current = null;
    }
  });

  test("a delivery whose write fails gives its claim back: the redelivery right after is accepted (probe 43a F1)", async () => {
    const target = build(generous);
    // The outbox refuses the write, as a full disk would, after the message id was claimed.
    target.db.$client.run(
      "CREATE TRIGGER full_disk BEFORE INSERT ON whatsapp_outbox BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    );
    const payload = notification({
      messages: [
        { id: "wamid.FIRST", from: "16505550004", text: "first" },
        { id: "wamid.LOST", from: "16505550005", text: "second" },
      ],
    });
    const failed = await deliver(target, payload);
    expect(failed.status).toBeGreaterThanOrEqual(500);
    expect(events(target)).toEqual([]);
    target.db.$client.run("DROP TRIGGER full_disk");
    const redelivered = await deliver(target, payload);
    expect(redelivered.status).toBe(200);
    expect(await redelivered.json()).toMatchObject({ accepted: 2, duplicates: 0 });
    expect(outbox(target).map((r) => r.message_id)).toEqual(["wamid.FIRST", "wamid.LOST"]);
  });

  test("a delivery whose write fails gives the sender's count back too: delivered again, it spends one message of the limit, not two (probe 44a F2)", async () => {
    const target = build(generous);
    const from = "16505550007";
    target.db.$client.run(
      "CREATE TRIGGER full_disk BEFORE INSERT ON whatsapp_outbox BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    );
    const first = notification({ messages: [{ id: "wamid.COUNTED", from, text: "one" }] });
    expect((await deliver(target, first)).status).toBeGreaterThanOrEqual(500);
    target.db.$client.run("DROP TRIGGER full_disk");
    // Three a minute: the redelivery and two more are all within it.
    const acks = [];
    for (const payload of [
      first,
      notification({ messages: [{ id: "wamid.COUNTED2", from, text: "two" }] }),
      notification({ messages: [{ id: "wamid.COUNTED3", from, text: "three" }] }),
    ]) {
      const response = await deliver(target, payload);
      expect(response.status).toBe(200);
      acks.push(((await response.json()) as { accepted: number }).accepted);
    }
    expect(acks).toEqual([1, 1, 1]);
    expect(outbox(target).map((r) => r.message_id)).toEqual([
      "wamid.COUNTED",
      "wamid.COUNTED2",
      "wamid.COUNTED3",
    ]);
  });

  test("a notification with one message claimed by a running delivery stores the others and is 503; delivered again, all are duplicates", async () => {
    const { target } = withClaimStanding("wamid.RUNNING");
    const payload = notification({
      messages: [
        { id: "wamid.RUNNING", from: "16505550006", text: "one" },
        { id: "wamid.READY", from: "16505550006", text: "two" },
      ],
    });
    expect((await deliver(target, payload)).status).toBe(503);
    expect(outbox(target).map((r) => r.message_id)).toEqual(["wamid.READY"]);
    // The running delivery finishes its message.
    target.db.$client.run("UPDATE webhook_events SET type = 'message.text' WHERE event_id = ?", [
      storedId(target, "wamid.RUNNING"),
    ]);
    const again = await deliver(target, payload);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ accepted: 0, duplicates: 2 });
  });
});

describe("status callbacks", () => {
  test("sent, delivered, read and failed are recorded once each and counted", async () => {
    const target = build();
    const callbacks = [
      { id: "wamid.OUT1", status: "sent" },
      { id: "wamid.OUT1", status: "delivered" },
      { id: "wamid.OUT1", status: "read" },
      { id: "wamid.OUT2", status: "failed", errorCode: 131047 },
      { id: "wamid.OUT3", status: "deleted" },
    ];
    const first = await deliver(target, notification({ statuses: callbacks }));
    expect(await first.json()).toMatchObject({ statuses: 4, ignored: 1 });
    const again = await deliver(target, notification({ statuses: callbacks.slice(0, 2) }));
    expect(await again.json()).toMatchObject({ statuses: 0, duplicates: 2 });
    expect(statuses(target)).toEqual([
      { message_id: "wamid.OUT1", status: "delivered", error_code: null },
      { message_id: "wamid.OUT1", status: "read", error_code: null },
      { message_id: "wamid.OUT1", status: "sent", error_code: null },
      { message_id: "wamid.OUT2", status: "failed", error_code: 131047 },
    ]);
    // The recipient's number in a status is not kept anywhere.
    const dump = JSON.stringify(target.db.$client.query("SELECT * FROM whatsapp_statuses").all());
    expect(dump).not.toContain("16505551234");
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('whatsapp_statuses_total{status="read"} 1');
    expect(metrics).toContain('whatsapp_statuses_total{status="failed"} 1');
    expect(metrics).toContain('webhook_events_total{provider="whatsapp",outcome="duplicate"} 2');
  });
});

describe("metrics", () => {
  test("deliveries are counted by outcome and the outbox backlog is exported", async () => {
    const target = build();
    await deliver(
      target,
      notification({
        messages: [
          { id: "wamid.M1", from: "16505551234" },
          { id: "wamid.M2", from: "16505551235" },
        ],
      }),
    );
    await deliver(target, notification({ messages: [{ id: "wamid.M1", from: "16505551234" }] }));
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('webhook_events_total{provider="whatsapp",outcome="processed"} 2');
    expect(metrics).toContain('webhook_events_total{provider="whatsapp",outcome="duplicate"} 1');
    expect(metrics).toContain("whatsapp_outbox_pending 2");
  });
});

describe("retention", () => {
  test("maintenance deletes finished rows, statuses and dedupe records after 30 days, not pending ones", async () => {
    const target = build();
    await deliver(
      target,
      notification({
        messages: [
          { id: "wamid.OLD", from: "16505551234" },
          { id: "wamid.NEW", from: "16505551235" },
        ],
        statuses: [{ id: "wamid.X", status: "read" }],
      }),
    );
    const old = Date.now() - 31 * 24 * 60 * 60 * 1000;
    const sqlite = target.db.$client;
    sqlite.run(
      "UPDATE whatsapp_outbox SET state = 'sent', finished_at = ?, received_at = ? WHERE message_id = ?",
      [old, old, storedId(target, "wamid.OLD")],
    );
    sqlite.run("UPDATE whatsapp_outbox SET received_at = ?", [old]);
    sqlite.run("UPDATE whatsapp_statuses SET received_at = ?", [old]);
    sqlite.run("UPDATE webhook_events SET received_at = ? WHERE event_id = ?", [
      old,
      storedId(target, "wamid.OLD"),
    ]);
    target.services.runMaintenance();
    expect(outbox(target).map((r) => r.message_id)).toEqual(["wamid.NEW"]);
    expect(events(target).map((e) => e.event_id)).toEqual(["wamid.NEW"]);
    expect(sqlite.query("SELECT * FROM whatsapp_statuses").all()).toEqual([]);
  });

  test("an expired status goes alone: the same message's recent statuses stay (probe 27e F2)", async () => {
    const target = build();
    await deliver(
      target,
      notification({
        statuses: [
          { id: "wamid.Y", status: "sent" },
          { id: "wamid.Y", status: "read" },
        ],
      }),
    );
    const sqlite = target.db.$client;
    const old = Date.now() - 31 * 24 * 60 * 60 * 1000;
    sqlite.run("UPDATE whatsapp_statuses SET received_at = ? WHERE status = 'sent'", [old]);
    target.services.runMaintenance();
    expect(statuses(target)).toEqual([{ message_id: "wamid.Y", status: "read", error_code: null }]);
  });

  test("a message id redelivered after its dedupe record was pruned, while the outbox still holds it, is a duplicate, not a 500 (probe 32b F2)", async () => {
    const target = build();
    const payload = notification({ messages: [{ id: "wamid.GAP", from: "16505551234" }] });
    expect((await deliver(target, payload)).status).toBe(200);
    const sqlite = target.db.$client;
    // Its reply finished 10 minutes after the message arrived: the record goes before the row.
    const day = 24 * 60 * 60 * 1000;
    const arrived = Date.now() - 30 * day - 60_000;
    sqlite.run(
      "UPDATE whatsapp_outbox SET state = 'sent', recipient = NULL, body = NULL, received_at = ?, finished_at = ?",
      [arrived, arrived + 600_000],
    );
    sqlite.run("UPDATE webhook_events SET received_at = ? WHERE event_id = ?", [
      arrived,
      storedId(target, "wamid.GAP"),
    ]);
    target.services.runMaintenance();
    expect(events(target)).toEqual([]);
    expect(outbox(target)).toHaveLength(1);
    for (let i = 0; i < 2; i++) {
      const again = await deliver(target, payload);
      expect(again.status).toBe(200);
      expect(await again.json()).toMatchObject({ accepted: 0, duplicates: 1 });
    }
    expect(outbox(target)).toHaveLength(1);
    // No claim is left behind: the id is recorded as the message it was.
    expect(events(target)).toEqual([{ event_id: "wamid.GAP", type: "message.text" }]);
  });

  test("a message sent longer ago than the dedupe records go back is ignored, never answered again (probe 32b F1)", async () => {
    const target = build();
    const day = 24 * 60 * 60 * 1000;
    const dated = (id: string, sentAgoMs: number) => {
      const payload = notification({ messages: [{ id, from: "16505551234" }] }) as unknown as {
        entry: { changes: { value: { messages: { timestamp: string }[] } }[] }[];
      };
      payload.entry[0]!.changes[0]!.value.messages[0]!.timestamp = String(
        Math.floor((Date.now() - sentAgoMs) / 1000),
      );
      return payload;
    };
    const stale = await deliver(target, dated("wamid.STALE", 40 * day));
    expect(stale.status).toBe(200);
    expect(await stale.json()).toMatchObject({ accepted: 0, ignored: 1 });
    const edge = await deliver(target, dated("wamid.EDGE", 29 * day + 60_000));
    expect(await edge.json()).toMatchObject({ accepted: 0, ignored: 1 });
    // Meta redelivers for a week: a message that old is still answered.
    const late = await deliver(target, dated("wamid.LATE", 7 * day));
    expect(await late.json()).toMatchObject({ accepted: 1, ignored: 0 });
    expect(outbox(target).map((row) => row.message_id)).toEqual(["wamid.LATE"]);
    expect(events(target).map((event) => event.event_id)).toEqual(["wamid.LATE"]);
  });
});
