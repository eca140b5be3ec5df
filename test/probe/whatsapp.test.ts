/**
 * Probe findings (branch probe-chat): the WhatsApp webhook. These tests FAIL on the current code.
 *
 * 1. Concurrent redeliveries of ONE message id each spend the sender's RATE_LIMIT_WHATSAPP_SENDER
 *    budget (the "seen" look-up runs before the limiter, but the dedupe record is only written
 *    after it), so a burst of Meta redeliveries — which Meta sends when we are slow to answer —
 *    silences the sender's next, genuinely new messages. The code's own comment: "a redelivery
 *    must not spend the sender's budget".
 * 2. The chat message rules apply "wherever it comes from (POST /api/chat, a WhatsApp message)"
 *    (src/modules/chat/message.ts), among them well-formed Unicode; the WhatsApp text cleaning
 *    removes control characters but lets an unpaired surrogate through to
 *    the outbox, where SQLite silently turns it into U+FFFD (so the chat gets altered text instead
 *    of the refusal or cleaning the rule promises).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, type TestApp } from "../support/app";
import { deliver, notification, ScriptedChat, sign, whatsappEnv } from "../support/whatsapp";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function build(env: Record<string, string> = {}) {
  current = buildTestApp({
    env: whatsappEnv(null, {
      RATE_LIMIT_WEBHOOKS: "1000",
      RATE_LIMIT_BURST: "1000",
      RATE_LIMIT_PER_MINUTE: "1000",
      ...env,
    }),
    whatsapp: { chat: new ScriptedChat() },
  });
  return current;
}

const outboxIds = (target: TestApp) =>
  target.db.$client
    .query<{ message_id: string }, []>("SELECT message_id FROM whatsapp_outbox ORDER BY id")
    .all()
    .map((row) => row.message_id);

describe("probe: WhatsApp sender limit", () => {
  test("concurrent redeliveries of one message id do not spend the sender's limit", async () => {
    const target = build({ RATE_LIMIT_WHATSAPP_SENDER: "3" });
    const from = "16505550001";
    const once = notification({ messages: [{ id: "wamid.REDELIVERED", from, text: "hello" }] });
    // Meta redelivers the same message 10 times while we are slow: one row, nine duplicates.
    const acks = await Promise.all(Array.from({ length: 10 }, () => deliver(target, once)));
    expect(acks.every((r) => r.status === 200)).toBe(true);
    expect(outboxIds(target)).toEqual(["wamid.REDELIVERED"]);
    // The sender has sent ONE message; two more fit in a limit of 3.
    const next = await deliver(
      target,
      notification({ messages: [{ id: "wamid.SECOND", from, text: "are you there?" }] }),
    );
    expect(((await next.json()) as { accepted: number }).accepted).toBe(1);
    expect(outboxIds(target)).toEqual(["wamid.REDELIVERED", "wamid.SECOND"]);
  });
});

describe("probe: WhatsApp text and the chat message rules", () => {
  test("an unpaired surrogate in a WhatsApp text does not reach the chat as is", async () => {
    const target = build();
    const payload = JSON.stringify(
      notification({ messages: [{ id: "wamid.LONE", from: "16505550002", text: "PLACEHOLDER" }] }),
    ).replace("PLACEHOLDER", "hello \\ud800 world");
    const response = await deliver(target, payload, { signature: sign(payload) });
    expect(response.status).toBe(200);
    const row = target.db.$client
      .query<{ body: string | null; kind: string }, []>(
        "SELECT body, kind FROM whatsapp_outbox WHERE message_id = 'wamid.LONE'",
      )
      .get();
    // Either refused/cleaned to well-formed text, or not queued for chat: never the raw surrogate
    // (SQLite silently turns it into U+FFFD).
    const body = row?.body ?? "";
    expect(body.isWellFormed() && !body.includes("\ufffd")).toBe(true);
  });
});

/**
 * 3. README "WhatsApp → Privacy": "A sender's number is kept in clear only on its outbox row while
 *    a reply is owed, and cleared when the reply is sent"; "The incoming text is cleared from the
 *    outbox once the reply is stored". The columns are set to NULL, but SQLite runs without
 *    `secure_delete`, so the old bytes of the number stay in the database file's free space
 *    and are read back with `strings` by anyone holding the file or a copy of it.
 */
describe("probe: cleared numbers stay in the database file", () => {
  test("after the replies are sent, no cleared number is left anywhere in the file", async () => {
    const { startGraphServer } = await import("../support/graph-server");
    const graph = startGraphServer();
    const target = buildTestApp({
      env: whatsappEnv(graph, { RATE_LIMIT_WEBHOOKS: "1000", RATE_LIMIT_BURST: "1000" }),
      whatsapp: { chat: new ScriptedChat() },
    });
    current = target;
    try {
      // Ten senders, one message each: every reply sent, every number cleared from its row.
      const numbers = Array.from({ length: 10 }, (_, i) => `1999888${String(7700 + i)}`);
      for (const [i, from] of numbers.entries()) {
        const response = await deliver(
          target,
          notification({ messages: [{ id: `wamid.PRIV${i}`, from, text: `question ${i}` }] }),
        );
        expect(response.status).toBe(200);
      }
      const worker = (
        target.services.features.find((f) => f.name === "whatsapp") as unknown as {
          worker: { drain(): Promise<number> };
        }
      ).worker;
      while ((await worker.drain()) > 0) {}
      await graph.waitForSent(numbers.length);
      const rows = target.db.$client
        .query<{ recipient: string | null; state: string }, []>(
          "SELECT recipient, state FROM whatsapp_outbox",
        )
        .all();
      expect(rows.every((r) => r.recipient === null && r.state === "sent")).toBe(true);
      // Everything committed goes into the main file.
      target.db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
      const bytes = Buffer.from(await Bun.file(target.databasePath).arrayBuffer()).toString(
        "latin1",
      );
      // Actual: the cleared numbers are still in the file's free space (no PRAGMA secure_delete).
      expect(numbers.filter((n) => bytes.includes(n))).toEqual([]);
    } finally {
      graph.close();
    }
  });
});
