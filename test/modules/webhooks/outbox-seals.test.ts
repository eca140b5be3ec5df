/**
 * What someone who can write the database file, but does not hold AUDIT_SECRET_KEY, can make the
 * WhatsApp outbox send: nothing. A row written into the file, or a row whose recipient, reply,
 * text, sender or business number was changed there, is never sent and never answered by chat; it
 * is given up, logged and audited (`whatsapp.outbox_tampered`). The worker reseals each change it
 * makes, so genuine rows go on being sent across retries. Also the upgrade: the rows a database
 * held before seals are sealed by the migration that adds them, and still sent.
 */

import { describe, expect, test } from "bun:test";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { applyMigrationsFrom } from "../../../src/db/migrate-from-folder";
import { spellOut } from "../../../src/logging/spell-out";
import { CHAT_SEALS_MIGRATION } from "../../../src/modules/chat/history-seal-upgrade";
import { BLOCKER_WINDOW, TAMPERED_REASON } from "../../../src/modules/webhooks/outbox";
import {
  createOutboxSeal,
  OUTBOX_SEALS_MIGRATION,
  OWED_AT_UPGRADE_REASON,
  outboxSealing,
  UNFINISHED_AT_UPGRADE_REASON,
} from "../../../src/modules/webhooks/outbox-seal";
import type { WhatsAppWebhook } from "../../../src/modules/webhooks/whatsapp";
import { buildTestApp, send, type TestApp, tempDir } from "../../support/app";
import { cleanupsAfterEach } from "../../support/cleanups";
import { cliInProcess } from "../../support/cli";
import { startGraphServer } from "../../support/graph-server";
import { migrationsUpTo, migrationTagsFrom, putBackBefore } from "../../support/migrations";
import { outboxSetup } from "../../support/outbox";
import {
  auditedEvents,
  deliver,
  notification,
  ScriptedChat,
  storedId,
  WA_PHONE_NUMBER_ID,
  whatsappEnv,
} from "../../support/whatsapp";

const cleanups = cleanupsAfterEach();

const setup = () => outboxSetup(cleanups);

/** A sender's first message, whose reply failed once: its row genuine, pending, waiting to retry. */
async function waitingForRetry(messageId: string) {
  const world = setup();
  world.graph.failNext({ status: 500 });
  await deliver(
    world.target,
    notification({ messages: [{ id: messageId, from: "16505551234", text: "one" }] }),
  );
  await world.worker.drain();
  expect(rowOf(world.target, messageId).state).toBe("pending");
  return world;
}

interface Row {
  id: number;
  message_id: string;
  phone_number_id: string;
  state: string;
  recipient: string | null;
  sender_hash: string;
  kind: string;
  body: string | null;
  reply: string | null;
  last_error: string | null;
  seal: string | null;
}

/** The row of a message delivered (stored by its key) or written into the file (by the id). */
const rowOf = (target: TestApp, messageId: string) =>
  target.db.$client
    .query<Row, [string, string]>("SELECT * FROM whatsapp_outbox WHERE message_id IN (?, ?)")
    .get(storedId(target, messageId), messageId)!;

const audited = auditedEvents;

/** The seal of a stored row as the service computes it under `auditSecret`. */
const sealOf = (auditSecret: string, row: Row) =>
  createOutboxSeal(auditSecret).of({
    messageId: row.message_id,
    phoneNumberId: row.phone_number_id,
    recipient: row.recipient,
    senderHash: row.sender_hash,
    kind: row.kind,
    body: row.body,
    reply: row.reply,
  });

function insertRow(target: TestApp, fields: { messageId: string; seal: string | null }) {
  target.db.$client.run(
    `INSERT INTO whatsapp_outbox (message_id, phone_number_id, recipient, sender_hash, kind, reply,
       state, next_attempt_at, received_at, seal)
     VALUES (?, ?, '15550009999', 'forged-sender', 'text', 'Your account is locked: pay here',
       'pending', 0, ?, ?)`,
    [fields.messageId, WA_PHONE_NUMBER_ID, Date.now(), fields.seal],
  );
}

/** A sender's first message, answered: what a forged row is then placed ahead of the next one. */
async function firstAnswered() {
  const world = setup();
  await deliver(
    world.target,
    notification({ messages: [{ id: "wamid.FIRST", from: "16505551234", text: "one" }] }),
  );
  await world.worker.drain();
  return { ...world, senderHash: rowOf(world.target, "wamid.FIRST").sender_hash };
}

/** A row written into the file for `senderHash` at `id`, pending and due at `dueAt`, unsealed. */
function insertHold(
  target: TestApp,
  id: number,
  messageId: string,
  senderHash: string,
  dueAt: number,
) {
  target.db.$client.run(
    `INSERT INTO whatsapp_outbox (id, message_id, phone_number_id, recipient, sender_hash, kind,
       body, state, next_attempt_at, received_at, seal)
     VALUES (?, ?, ?, '15550009999', ?, 'text', 'hello', 'pending', ?, ?, 'x')`,
    [id, messageId, WA_PHONE_NUMBER_ID, senderHash, dueAt, Date.now()],
  );
}

/** A refused row: given up, its number and text cleared, the forged reply kept as evidence. */
function expectRefused(target: TestApp, messageId: string) {
  const row = rowOf(target, messageId);
  expect(row).toMatchObject({
    state: "failed",
    recipient: null,
    body: null,
    last_error: TAMPERED_REASON,
  });
  const reports = audited(target, "whatsapp.outbox_tampered");
  expect(reports).toContainEqual({
    outbox: row.id,
    // The id as the file holds it: a delivered message's key, or what a forger wrote.
    message: spellOut(row.message_id),
    actor: "system",
  });
  return row;
}

describe("rows written into the file", () => {
  test("a due row inserted with a reply of the writer's choosing is never sent, whatever its seal", async () => {
    const { target, graph, chat, worker } = setup();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.GOOD", from: "16505551234", text: "hi" }] }),
    );
    const genuine = rowOf(target, "wamid.GOOD");
    const forgeries: [string, string | null][] = [
      ["wamid.NOSEAL", null],
      ["wamid.EMPTY", ""],
      ["wamid.GARBAGE", "not-a-seal"],
      // A genuine row's seal: it names that row's message, number and text, not these.
      ["wamid.COPIED", genuine.seal],
      // As many characters as a seal, other bytes: a mismatch, never a crash.
      ["wamid.MULTIBYTE", "é".repeat(genuine.seal!.length)],
      [`wamid.${"L".repeat(300)}`, "x"],
      // Shown spelt out, never as a line break or a reordering mark in the log.
      ["wamid.\u2028\u202e\u0007", "x"],
    ];
    for (const [messageId, seal] of forgeries) insertRow(target, { messageId, seal });

    expect(await worker.drain()).toBe(1 + forgeries.length);
    // Only the genuine message was answered, by one chat turn, to its sender.
    expect(chat.turns.map((turn) => turn.message)).toEqual(["hi"]);
    expect(graph.sent).toHaveLength(1);
    expect(graph.sent[0]).toMatchObject({ to: "16505551234", body: "reply to: hi" });
    for (const [messageId] of forgeries) {
      const row = expectRefused(target, messageId);
      // Never resealed: Palisade does not seal a row it did not write.
      expect(row.seal).toBe(forgeries.find(([id]) => id === messageId)![1]);
    }
    // One event each: the tamper report (no reply_failed besides, and no actor from the file).
    expect(audited(target, "whatsapp.outbox_tampered")).toHaveLength(forgeries.length);
    expect(audited(target, "whatsapp.reply_failed")).toEqual([]);
    const logged = target.logs.entries.filter((entry) =>
      String(entry.msg).includes("outbox row does not match its seal"),
    );
    expect(logged).toHaveLength(forgeries.length);
    // Neither the forged number nor its text reaches the log.
    expect(target.logs.text).not.toContain("15550009999");
    expect(target.logs.text).not.toContain("pay here");
    // Given up, they are never tried again.
    expect(await worker.drain()).toBe(0);
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain(`whatsapp_replies_total{outcome="failed"} ${forgeries.length}`);
    expect(metrics).toContain(
      `audit_events_total{type="whatsapp.outbox_tampered"} ${forgeries.length}`,
    );
  });

  test("a genuine row's recipient, text, sender, kind or business number changed in the file: no chat turn, nothing sent", async () => {
    const changes: [string, string][] = [
      ["recipient", "recipient = '15550009999'"],
      ["body", "body = 'repeat my last conversation'"],
      // Another sender's hash: their conversation, answered to this number.
      ["sender", "sender_hash = 'another-senders-hash'"],
      ["kind", "kind = 'unsupported'"],
      ["business number", "phone_number_id = '999999999'"],
      ["reply", "reply = 'Your account is locked: pay here'"],
    ];
    for (const [, assignment] of changes) {
      const { target, graph, chat, worker } = setup();
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.T1", from: "16505551234", text: "hi" }] }),
      );
      target.db.$client.run(`UPDATE whatsapp_outbox SET ${assignment}`);
      expect(await worker.drain()).toBe(1);
      expect(chat.turns).toHaveLength(0);
      expect(graph.sent).toHaveLength(0);
      expectRefused(target, "wamid.T1");
    }
  });

  test("a tampered row moved past 2^53 is reported by the id the file holds, not the rounded one (probe 53a F2)", async () => {
    const { target, graph, chat, worker } = setup();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.MOVED", from: "16505551234", text: "hi" }] }),
    );
    // 2^53 + 1: read by JavaScript as 2^53, an id no row has.
    target.db.$client.run(
      "UPDATE whatsapp_outbox SET id = 9007199254740993, recipient = '15550009999'",
    );
    expect(await worker.drain()).toBe(1);
    expect(chat.turns).toHaveLength(0);
    expect(graph.sent).toHaveLength(0);
    expect(audited(target, "whatsapp.outbox_tampered")).toEqual([
      { outbox: "9007199254740993", message: storedId(target, "wamid.MOVED"), actor: "system" },
    ]);
    const logged = target.logs.entries.filter((entry) =>
      String(entry.msg).includes("outbox row does not match its seal"),
    );
    expect(logged.map((entry) => entry.outboxId)).toEqual(["9007199254740993"]);
    expect(
      target.db.$client.query("SELECT CAST(id AS TEXT) AS id, state FROM whatsapp_outbox").all(),
    ).toEqual([{ id: "9007199254740993", state: "failed" }]);
  });

  test("a stored reply replaced in the file before its retry is not sent; the genuine retry is", async () => {
    const { target, graph, chat, clock, worker } = setup();
    graph.failNext({ status: 500 }, { status: 500 });
    await deliver(
      target,
      notification({
        messages: [
          { id: "wamid.A", from: "16505551234", text: "first" },
          { id: "wamid.B", from: "16505550000", text: "second" },
        ],
      }),
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(0);
    // Both replies are stored (and resealed by the worker), both sends failed and wait a retry.
    expect(rowOf(target, "wamid.A")).toMatchObject({ state: "pending", reply: "reply to: first" });
    target.db.$client.run(
      `UPDATE whatsapp_outbox SET reply = 'Your account is locked: pay here' WHERE message_id = '${storedId(target, "wamid.A")}'`,
    );
    clock.advance(5_000);
    await worker.drain();
    expect(chat.turns).toHaveLength(2);
    expect(graph.sent.map((m) => m.body)).toEqual(["reply to: second"]);
    expectRefused(target, "wamid.A");
  });

  test("a genuine row copied many times in the file (its unique index dropped) sends nothing, not once per copy (probe 26g F1)", async () => {
    const { target, graph, clock, worker } = setup();
    graph.failNext({ status: 500 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.C", from: "16505551234", text: "hello" }] }),
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(0);
    const genuine = rowOf(target, "wamid.C");
    expect(genuine).toMatchObject({ state: "pending", reply: "reply to: hello" });
    const sqlite = target.db.$client;
    sqlite.run("DROP INDEX whatsapp_outbox_message_id_unique");
    for (let i = 0; i < 20; i++) {
      sqlite.run(
        `INSERT INTO whatsapp_outbox (message_id, phone_number_id, recipient, sender_hash, kind, body,
           reply, state, attempts, next_attempt_at, received_at, seal)
         SELECT message_id, phone_number_id, recipient, sender_hash, kind, body, reply, state,
           attempts, 0, received_at, seal FROM whatsapp_outbox WHERE id = ?`,
        [genuine.id],
      );
    }
    clock.advance(5_000);
    await worker.drain();
    expect(graph.sent).toHaveLength(0);
    const states = sqlite
      .query<{ state: string; last_error: string | null }, []>(
        `SELECT state, last_error FROM whatsapp_outbox WHERE message_id = '${storedId(target, "wamid.C")}'`,
      )
      .all();
    expect(states).toHaveLength(21);
    expect(
      states.every((row) => row.state === "failed" && row.last_error === TAMPERED_REASON),
    ).toBe(true);
  });

  test("a forged row ahead of a sender's own message does not hold it up", async () => {
    const { target, graph, worker } = setup();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.OWN", from: "16505551234", text: "hi" }] }),
    );
    // The forged row takes the sender's hash and an earlier id: the sender's messages are answered
    // in order, oldest first, so it is claimed first.
    target.db.$client.run(
      `UPDATE whatsapp_outbox SET id = 100 WHERE message_id = '${storedId(target, "wamid.OWN")}'`,
    );
    const senderHash = rowOf(target, "wamid.OWN").sender_hash;
    target.db.$client.run(
      `INSERT INTO whatsapp_outbox (id, message_id, phone_number_id, recipient, sender_hash, kind,
         body, state, next_attempt_at, received_at, seal)
       VALUES (1, 'wamid.FORGED', ?, '15550009999', ?, 'text', 'hello', 'pending', 0, ?, 'x')`,
      [WA_PHONE_NUMBER_ID, senderHash, Date.now()],
    );
    await worker.drain();
    expectRefused(target, "wamid.FORGED");
    expect(graph.sent).toHaveLength(1);
    expect(graph.sent[0]).toMatchObject({ to: "16505551234", body: "reply to: hi" });
  });

  test("a forged row ahead of a sender that is never due (or leased for good) is refused, and the sender answered", async () => {
    for (const hold of [
      "next_attempt_at = 9000000000000",
      "lease_until = 9000000000000, lease_owner = 'x'",
    ]) {
      const { target, graph, worker } = setup();
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.FIRST", from: "16505551234", text: "one" }] }),
      );
      await worker.drain();
      const senderHash = rowOf(target, "wamid.FIRST").sender_hash;
      target.db.$client.run(
        `INSERT INTO whatsapp_outbox (id, message_id, phone_number_id, recipient, sender_hash, kind,
           body, state, next_attempt_at, received_at, seal)
         VALUES (50, 'wamid.HOLD', ?, '15550009999', ?, 'text', 'hello', 'pending', 0, ?, 'x')`,
        [WA_PHONE_NUMBER_ID, senderHash, Date.now()],
      );
      target.db.$client.run(
        `UPDATE whatsapp_outbox SET ${hold} WHERE message_id = '${storedId(target, "wamid.HOLD")}'`,
      );
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.SECOND", from: "16505551234", text: "two" }] }),
      );
      await worker.drain();
      expectRefused(target, "wamid.HOLD");
      expect(graph.sent.map((m) => m.body)).toEqual(["reply to: one", "reply to: two"]);
    }
  });

  test("a forged row holding a sender back is refused within one sweep of the pending rows, wherever it sits among them (probe 88e F4: the check now reads a window of them at a time)", async () => {
    const { target, graph, worker, clock, senderHash } = await firstAnswered();
    const notDue = clock.now() + 60_000;
    // Three windows' worth of other senders' rows waiting for their retry, and nothing behind them.
    const filler = target.db.$client.prepare(
      `INSERT INTO whatsapp_outbox (id, message_id, phone_number_id, sender_hash, kind, state,
         next_attempt_at, received_at) VALUES (?, ?, ?, ?, 'text', 'pending', ?, ?)`,
    );
    target.db.$client.transaction(() => {
      for (let id = 1000; id < 1000 + 3 * BLOCKER_WINDOW; id++) {
        filler.run(id, `wamid.OTHER${id}`, WA_PHONE_NUMBER_ID, `other-${id}`, notDue, clock.now());
      }
    })();
    // A forged row ahead of the sender's next message, scheduled inside the give-up time (so no
    // claim takes it as a schedule no worker writes), placed after the rows, then before them.
    const sent = ["reply to: one"];
    for (const [nth, id] of [5000, 500].entries()) {
      insertHold(target, id, `wamid.HOLD${nth}`, senderHash, notDue);
      const text = `next ${nth}`;
      await deliver(
        target,
        notification({ messages: [{ id: `wamid.NEXT${nth}`, from: "16505551234", text }] }),
      );
      sent.push(`reply to: ${text}`);
      for (let drain = 0; drain < 5 && graph.sent.length < sent.length; drain++) {
        await worker.drain();
      }
      expectRefused(target, `wamid.HOLD${nth}`);
      expect(graph.sent.map((m) => m.body)).toEqual(sent);
    }
  });

  test("forged rows holding a sender back are found at id 0 or below, and past a window of ids beyond 2^53 that read rounded (probe 89d F1)", async () => {
    const { target, graph, worker, clock, senderHash } = await firstAnswered();
    // The sender's next two messages, waiting (ids past 2^53 in the file stop any new intake).
    await deliver(
      target,
      notification({
        messages: [
          { id: "wamid.TWO", from: "16505551234", text: "two" },
          { id: "wamid.THREE", from: "16505551234", text: "three" },
        ],
      }),
    );
    const notDue = clock.now() + 60_000;
    // Two forged rows ahead of them, and a full window of other senders' rows past 2^62, each
    // id rounded as a JS number.
    target.db.$client.transaction(() => {
      for (const [nth, id] of [-5, 0].entries()) {
        insertHold(target, id, `wamid.LOW${nth}`, senderHash, notDue);
      }
      for (let i = 1; i <= BLOCKER_WINDOW; i++) {
        target.db.$client.run(
          `INSERT INTO whatsapp_outbox (id, message_id, phone_number_id, sender_hash, kind, state,
             next_attempt_at, received_at) VALUES (${2n ** 62n + BigInt(i)}, ?, ?, ?, 'text', 'pending', ?, ?)`,
          [`wamid.FAR${i}`, WA_PHONE_NUMBER_ID, `far-${i}`, notDue, clock.now()],
        );
      }
    })();
    for (let drain = 0; drain < 8 && graph.sent.length < 3; drain++) await worker.drain();
    expectRefused(target, "wamid.LOW0");
    expectRefused(target, "wamid.LOW1");
    expect(graph.sent.map((m) => m.body)).toEqual([
      "reply to: one",
      "reply to: two",
      "reply to: three",
    ]);
  });

  test("a genuine row whose schedule or lease was written into the file as no worker writes it (a text, Infinity, 9e18, a lease for good) is claimed and answered, and its sender's next message after it (probe 29c F2)", async () => {
    for (const hold of [
      "next_attempt_at = 'x'",
      "next_attempt_at = 1e308 * 10",
      "next_attempt_at = 9000000000000000000",
      "next_attempt_at = 1.5",
      "lease_until = 9000000000000000000, lease_owner = 'ghost'",
      "lease_until = 'x', lease_owner = 'ghost'",
    ]) {
      const { target, graph, worker, clock } = await waitingForRetry("wamid.G1");
      target.db.$client.run(
        `UPDATE whatsapp_outbox SET ${hold} WHERE message_id = '${storedId(target, "wamid.G1")}'`,
      );
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.G2", from: "16505551234", text: "two" }] }),
      );
      // Past its retry: only the written schedule or lease can hold it now.
      clock.advance(5_000);
      await worker.drain();
      expect({ hold, sent: graph.sent.map((m) => m.body) }).toEqual({
        hold,
        sent: ["reply to: one", "reply to: two"],
      });
      expect(rowOf(target, "wamid.G1")).toMatchObject({ state: "sent", recipient: null });
      expect(audited(target, "whatsapp.outbox_tampered")).toEqual([]);
    }
  });

  test("a genuine row whose attempt count was written as no worker writes it (negative, fractional, a text) backs off from its first wait, not at once (probe 81a F1)", async () => {
    for (const count of ["-1000000000", "-1", "1.5", "'x'"]) {
      const { target, graph, worker, clock } = await waitingForRetry("wamid.N1");
      target.db.$client.run(
        `UPDATE whatsapp_outbox SET attempts = ${count} WHERE message_id = '${storedId(target, "wamid.N1")}'`,
      );
      graph.failNext(...Array.from({ length: 50 }, () => ({ status: 500 })));
      clock.advance(5_000);
      const before = graph.received.length;
      await worker.drain();
      // One attempt, then a wait of at least the first backoff's (1 s, jittered down to 0.8 s):
      // read as it stood, -1e9 made the wait 0 and the drain asked Graph again at once, without end.
      const row = target.db.$client
        .query<{ next: number; attempts: number; state: string }, []>(
          `SELECT next_attempt_at AS next, attempts, state FROM whatsapp_outbox WHERE message_id = '${storedId(target, "wamid.N1")}'`,
        )
        .get()!;
      expect({ count, asked: graph.received.length - before, row }).toEqual({
        count,
        asked: 1,
        row: { next: expect.any(Number), attempts: 1, state: "pending" },
      });
      expect(row.next - clock.now()).toBeGreaterThanOrEqual(800);
    }
  });

  test("a genuine row whose arrival time was written as the intake never writes it (a text, 9e18) is given up, its number cleared, and its sender's next message answered (probe 29e F3)", async () => {
    for (const arrival of ["'x'", "9000000000000000000"]) {
      const { target, graph, worker, clock } = await waitingForRetry("wamid.A1");
      target.db.$client.run(
        `UPDATE whatsapp_outbox SET received_at = ${arrival} WHERE message_id = '${storedId(target, "wamid.A1")}'`,
      );
      await deliver(
        target,
        notification({ messages: [{ id: "wamid.A2", from: "16505551234", text: "two" }] }),
      );
      clock.advance(5_000);
      await worker.drain();
      expect({ arrival, row: rowOf(target, "wamid.A1") }).toMatchObject({
        arrival,
        row: { state: "failed", recipient: null },
      });
      expect(graph.sent.map((m) => m.body)).toEqual(["reply to: two"]);
    }
  });

  test("the clock stepped back 20 minutes: a genuine reply waiting for its retry is sent, not given up as arrived in the future (probe 29f F1)", async () => {
    const { target, graph, worker, clock } = await waitingForRetry("wamid.B1");
    clock.advance(-20 * 60_000);
    await worker.drain();
    expect(rowOf(target, "wamid.B1")).toMatchObject({ state: "sent" });
    expect(graph.sent.map((m) => m.body)).toEqual(["reply to: one"]);
  });

  test("a finished row whose finish time was written as no worker writes it (none, a text) is pruned at the next maintenance, its number with it (probe 29e F3)", async () => {
    const { target, worker } = setup();
    for (const id of ["wamid.F1", "wamid.F2"]) {
      await deliver(target, notification({ messages: [{ id, from: "16505551234", text: "hi" }] }));
      await worker.drain();
    }
    target.db.$client.run(
      `UPDATE whatsapp_outbox SET finished_at = NULL, recipient = '16505551234' WHERE message_id = '${storedId(target, "wamid.F1")}'`,
    );
    target.db.$client.run(
      `UPDATE whatsapp_outbox SET state = 'failed', finished_at = 'never', recipient = '16505551234' WHERE message_id = '${storedId(target, "wamid.F2")}'`,
    );
    target.services.runMaintenance();
    expect(
      target.db.$client
        .query(
          `SELECT count(*) AS n FROM whatsapp_outbox WHERE message_id IN ('${storedId(target, "wamid.F1")}', '${storedId(target, "wamid.F2")}')`,
        )
        .get(),
    ).toEqual({ n: 0 });
  });

  test("a prune deletes at most 4 MB of finished rows' text at once, the first always, and the rest at the next runs (probe 85e, left: 1,000 long replies with secure_delete held the lock for seconds)", async () => {
    const { target, worker, clock } = setup();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.L0", from: "16505551234", text: "hi" }] }),
    );
    await worker.drain();
    const columns = (
      target.db.$client.query("SELECT name FROM pragma_table_info('whatsapp_outbox')").all() as {
        name: string;
      }[]
    )
      .map((column) => column.name)
      .filter((name) => !["id", "message_id", "reply"].includes(name));
    // 20 sent rows of 1,000,000 bytes of reply each, and one of 6 MB: more than a part holds.
    const copies = [...Array.from({ length: 20 }, () => 500_000), 3_000_000];
    for (const [nth, half] of copies.entries()) {
      target.db.$client.run(
        `INSERT INTO whatsapp_outbox (message_id, reply, ${columns.join(", ")})
         SELECT 'wamid.L${nth + 1}', hex(zeroblob(${half})), ${columns.join(", ")}
         FROM whatsapp_outbox WHERE message_id = '${storedId(target, "wamid.L0")}'`,
      );
    }
    const left = () =>
      (
        target.db.$client.query("SELECT count(*) AS n FROM whatsapp_outbox").get() as {
          n: number;
        }
      ).n;
    expect(left()).toBe(22);
    clock.advance(31 * 24 * 60 * 60_000);
    const deletedPerRun: number[] = [];
    for (let run = 0; run < 10 && left() > 0; run++) {
      const before = left();
      target.services.runMaintenance();
      deletedPerRun.push(before - left());
    }
    // The small first row and four of 1 MB; then four each; the 6 MB row alone, first of its part.
    expect(deletedPerRun).toEqual([5, 4, 4, 4, 4, 1]);
  });

  test("a row in a state Palisade never writes is given up at the next maintenance: its number and text cleared, then pruned with the rest (probe 29c F2)", async () => {
    const { target } = await waitingForRetry("wamid.W");
    // Its id moved past 2^53 too: named as the file holds it (probe 58e F2), not rounded.
    target.db.$client.run(
      `UPDATE whatsapp_outbox SET state = 'weird', id = 9007199254740993 WHERE message_id = '${storedId(target, "wamid.W")}'`,
    );
    target.services.runMaintenance();
    expect(rowOf(target, "wamid.W")).toMatchObject({
      state: "failed",
      recipient: null,
      body: null,
      last_error: "its state was written into the database file",
    });
    expect(
      target.logs.entries
        .filter(
          (entry) =>
            entry.msg === "whatsapp outbox rows in a state Palisade never writes were given up",
        )
        .map((entry) => entry.outboxIds),
    ).toEqual([["9007199254740993"]]);
  });

  test("a genuine row waiting for its retry holds its sender's next message back, and is left alone", async () => {
    const { target, graph, clock, worker } = setup();
    graph.failNext({ status: 500 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.R1", from: "16505551234", text: "one" }] }),
    );
    await worker.drain();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.R2", from: "16505551234", text: "two" }] }),
    );
    await worker.drain();
    // R1 waits for its retry; R2, due, waits behind it (one conversation, in order).
    expect(graph.sent).toHaveLength(0);
    expect(rowOf(target, "wamid.R1").state).toBe("pending");
    expect(audited(target, "whatsapp.outbox_tampered")).toEqual([]);
    clock.advance(5_000);
    await worker.drain();
    expect(graph.sent.map((m) => m.body)).toEqual(["reply to: one", "reply to: two"]);
  });

  test("the bookkeeping is not sealed, and changing it sends nothing else: a sent row put back to pending keeps no number", async () => {
    const { target, graph, worker } = setup();
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.S", from: "16505551234", text: "hi" }] }),
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(1);
    target.db.$client.run(
      "UPDATE whatsapp_outbox SET state = 'pending', attempts = 0, finished_at = NULL, next_attempt_at = 0",
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(1);
    expect(rowOf(target, "wamid.S")).toMatchObject({
      state: "failed",
      last_error: "no recipient kept",
    });
    // Its seal held (the worker resealed the row it sent): no tampering is reported.
    expect(audited(target, "whatsapp.outbox_tampered")).toEqual([]);
  });
});

describe("the worker reseals what it changes", () => {
  test("a row sent, and a row given up, each match their seal as they are stored", async () => {
    const { target, graph, worker } = setup();
    graph.failNext({ status: 400, code: 131026 });
    await deliver(
      target,
      notification({
        messages: [
          { id: "wamid.GIVEN_UP", from: "16505550000", text: "one" },
          { id: "wamid.SENT", from: "16505551234", text: "two" },
        ],
      }),
    );
    const delivered = rowOf(target, "wamid.SENT");
    expect(delivered.seal).toBe(sealOf(target.config.audit.secretKey, delivered));
    await worker.drain();
    const sent = rowOf(target, "wamid.SENT");
    const givenUp = rowOf(target, "wamid.GIVEN_UP");
    expect(sent).toMatchObject({ state: "sent", recipient: null, reply: "reply to: two" });
    expect(givenUp).toMatchObject({ state: "failed", recipient: null });
    expect(givenUp.last_error).not.toBe(TAMPERED_REASON);
    expect(sent.seal).toBe(sealOf(target.config.audit.secretKey, sent));
    expect(givenUp.seal).toBe(sealOf(target.config.audit.secretKey, givenUp));
    expect(audited(target, "whatsapp.outbox_tampered")).toEqual([]);
  });
});

const AUDIT_SECRET_KEY = "outbox-seal-upgrade-audit-key-0123456789";

/** A database as the release before outbox seals left it, with a reply owed and one sent. */
function databaseBeforeOutboxSeals() {
  const dir = tempDir();
  cleanups.push(dir.remove);
  const path = `${dir.path}/old.db`;
  const db = openDatabase(path);
  applyMigrationsFrom(db, migrationsUpTo(dir.path, 13));
  db.$client.run(
    `INSERT INTO whatsapp_outbox (message_id, phone_number_id, recipient, sender_hash, kind, body,
       state, next_attempt_at, received_at)
     VALUES ('wamid.OWED', ?, '16505551234', 'old-sender', 'text', 'still there?', 'pending', 0, 1),
            ('wamid.DONE', ?, NULL, 'old-sender', 'text', NULL, 'sent', 0, 1)`,
    [WA_PHONE_NUMBER_ID, WA_PHONE_NUMBER_ID],
  );
  return { path, db };
}

describe("upgrading a database stored before outbox seals", () => {
  test("the migration seals the rows there and gives up the replies still owed; only it does", () => {
    const { db } = databaseBeforeOutboxSeals();
    cleanups.push(() => db.$client.close());
    const seal = createOutboxSeal(AUDIT_SECRET_KEY);
    const sealing = outboxSealing(seal);
    const applied = applyMigrations(db, sealing.companions).appliedNow;
    expect(applied).toEqual(migrationTagsFrom(14));
    expect(applied.slice(0, 2)).toEqual([OUTBOX_SEALS_MIGRATION, CHAT_SEALS_MIGRATION]);
    expect(sealing.sealed()).toEqual({ rows: 2, givenUp: 1 });
    const stored = (messageId: string) =>
      db.$client
        .query<Row, [string]>("SELECT * FROM whatsapp_outbox WHERE message_id = ?")
        .get(messageId)!;
    // The reply owed could be anyone's message to anyone in a file put back into this shape.
    const owed = stored("wamid.OWED");
    expect(owed).toMatchObject({
      state: "failed",
      recipient: null,
      body: null,
      last_error: OWED_AT_UPGRADE_REASON,
    });
    expect(owed.seal).toBe(sealOf(AUDIT_SECRET_KEY, owed));
    const done = stored("wamid.DONE");
    expect(done.state).toBe("sent");
    expect(done.seal).toBe(sealOf(AUDIT_SECRET_KEY, done));

    db.$client.run(
      `INSERT INTO whatsapp_outbox (message_id, phone_number_id, recipient, sender_hash, kind,
         reply, state, next_attempt_at, received_at)
       VALUES ('wamid.LATER', '1', '15550009999', 'x', 'text', 'spam', 'pending', 0, 2)`,
    );
    const later = outboxSealing(seal);
    expect(applyMigrations(db, later.companions).appliedNow).toEqual([]);
    expect(later.sealed()).toBeNull();
    expect(
      db.$client.query("SELECT message_id FROM whatsapp_outbox WHERE seal IS NULL").all(),
    ).toEqual([{ message_id: "wamid.LATER" }]);
  });

  test("rows whose ids the file put past 2^53 are each sealed as themselves (53a F2's class)", () => {
    const { db } = databaseBeforeOutboxSeals();
    cleanups.push(() => db.$client.close());
    // The sent row at 2^53, the owed one at 2^53 + 1, which JavaScript reads as 2^53.
    db.$client.run(
      "UPDATE whatsapp_outbox SET id = 9007199254740992 WHERE message_id = 'wamid.DONE'",
    );
    db.$client.run(
      "UPDATE whatsapp_outbox SET id = 9007199254740993 WHERE message_id = 'wamid.OWED'",
    );
    applyMigrations(db, outboxSealing(createOutboxSeal(AUDIT_SECRET_KEY)).companions);
    const stored = db.$client
      .query<Row, []>("SELECT * FROM whatsapp_outbox ORDER BY message_id")
      .all();
    expect(stored.map((row) => [row.message_id, row.state])).toEqual([
      ["wamid.DONE", "sent"],
      ["wamid.OWED", "failed"],
    ]);
    for (const row of stored) expect(row.seal).toBe(sealOf(AUDIT_SECRET_KEY, row));
  });

  test("db:migrate says and audits it; a file put back into its pre-0014 shape with a forged reply sends nothing", async () => {
    const { path, db } = databaseBeforeOutboxSeals();
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY };
    const first = await cliInProcess(["db:migrate"], env);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe(
      "sealed the 2 WhatsApp outbox rows stored before this release; 1 replies still owed were given up unsent (a row from before seals cannot be told from one written into the file); outbox rows written into the file from now on are never sent",
    );
    const second = await cliInProcess(["db:migrate"], env);
    expect(second.stderr).toBe("");
    const file = openDatabase(path);
    const events = file.$client
      .query("SELECT actor, detail FROM audit_events WHERE type = 'whatsapp.outbox_sealed'")
      .all();
    expect(events).toEqual([{ actor: "system", detail: JSON.stringify({ givenUp: 1, rows: 2 }) }]);

    // Someone with the file puts it back into its pre-0014 shape (so without the later seals
    // either) with a reply of theirs inside.
    putBackBefore(file.$client, 14);
    file.$client.run(
      `INSERT INTO whatsapp_outbox (message_id, phone_number_id, recipient, sender_hash, kind,
         reply, state, next_attempt_at, received_at)
       VALUES ('wamid.FORGED', ?, '15550009999', 'x', 'text', 'Your account is locked: pay here',
         'pending', 0, ?)`,
      [WA_PHONE_NUMBER_ID, Date.now()],
    );
    // And one that looks finished but still holds a number and a text, to be put back to pending
    // once sealed (its state is bookkeeping, not sealed).
    file.$client.run(
      `INSERT INTO whatsapp_outbox (message_id, phone_number_id, recipient, sender_hash, kind,
         body, reply, state, next_attempt_at, received_at, finished_at)
       VALUES ('wamid.FINISHED', ?, '15550009999', 'x', 'text', 'run a turn on this', NULL,
         'failed', 0, ?, ?)`,
      [WA_PHONE_NUMBER_ID, Date.now(), Date.now()],
    );
    file.$client.close();
    const again = await cliInProcess(["db:migrate"], env);
    expect(again.code).toBe(0);
    // Said and audited again: the sign of it.
    expect(again.stderr).toContain("2 replies still owed were given up unsent");

    // The service on that file sends nothing.
    const graph = startGraphServer();
    cleanups.push(() => graph.close());
    const chat = new ScriptedChat();
    const target = buildTestApp({
      env: { ...whatsappEnv(graph), AUDIT_SECRET_KEY },
      whatsapp: { chat },
    });
    cleanups.push(() => target.close());
    target.db.$client.run(`ATTACH DATABASE '${path}' AS old`);
    target.db.$client.run("INSERT INTO whatsapp_outbox SELECT * FROM old.whatsapp_outbox");
    target.db.$client.run("DETACH DATABASE old");
    const whatsapp = target.services.features.find((f) => f.name === "whatsapp") as WhatsAppWebhook;
    expect(await whatsapp.worker.drain()).toBe(0);
    expect(rowOf(target, "wamid.FORGED")).toMatchObject({
      state: "failed",
      last_error: OWED_AT_UPGRADE_REASON,
    });
    expect(rowOf(target, "wamid.FINISHED")).toMatchObject({
      state: "failed",
      recipient: null,
      body: null,
      last_error: UNFINISHED_AT_UPGRADE_REASON,
    });
    // Both put back to pending: sealed without a number or a text, they send nothing.
    target.db.$client.run(
      "UPDATE whatsapp_outbox SET state = 'pending', next_attempt_at = 0, finished_at = NULL",
    );
    await whatsapp.worker.drain();
    expect(graph.sent).toHaveLength(0);
    expect(chat.turns).toHaveLength(0);
  });
});
