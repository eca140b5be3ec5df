/**
 * WhatsApp message ids (`wamid.…`, base64 that holds the other side's number) are stored as keyed
 * hashes, and migration 0033's companion rewrites those a release before stored as sent (probe 86a
 * F2): after it no id of Meta's is left in the file, and a redelivery, a status and a reply owed
 * across the upgrade behave as if nothing had changed.
 */
import type { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { applyMigrations } from "../../../src/db/migrate";
import { createOutboxSeal, type SealedOutboxRow } from "../../../src/modules/webhooks/outbox-seal";
import { upgradeSealing } from "../../../src/upgrade-sealing";
import type { TestApp } from "../../support/app";
import { cleanupsAfterEach } from "../../support/cleanups";
import { putBackBefore } from "../../support/migrations";
import { outboxSetup } from "../../support/outbox";
import { deliver, notification, storedId } from "../../support/whatsapp";

const cleanups = cleanupsAfterEach();

/** Every id-holding column of the three tables, as text. */
function storedIds(sqlite: Database): string {
  return JSON.stringify([
    sqlite.query("SELECT event_id FROM webhook_events WHERE provider = 'whatsapp'").all(),
    sqlite.query("SELECT message_id, reply_message_id FROM whatsapp_outbox").all(),
    sqlite.query("SELECT message_id FROM whatsapp_statuses").all(),
  ]);
}

const outboxRow = (sqlite: Database, messageId: string) =>
  sqlite
    .query<SealedOutboxRow & { state: string; last_error: string | null }, [string]>(
      `SELECT message_id AS messageId, phone_number_id AS phoneNumberId, recipient,
         sender_hash AS senderHash, kind, body, reply, reply_sent_chars AS replySentChars, state,
         last_error
       FROM whatsapp_outbox WHERE message_id = ?`,
    )
    .get(messageId);

/**
 * Puts each id back as the release before stored it (Meta's id itself, the outbox row sealed over
 * it), and puts the file back before 0033, as a file of that release reads.
 */
function storedAsBefore(target: TestApp, ids: readonly string[]): void {
  const sqlite = target.db.$client;
  const seal = createOutboxSeal(target.config.audit.secretKey);
  for (const id of ids) {
    const key = storedId(target, id);
    sqlite.run(
      "UPDATE webhook_events SET event_id = ? WHERE provider = 'whatsapp' AND event_id = ?",
      [id, key],
    );
    sqlite.run("UPDATE whatsapp_statuses SET message_id = ? WHERE message_id = ?", [id, key]);
    sqlite.run("UPDATE whatsapp_outbox SET reply_message_id = ? WHERE reply_message_id = ?", [
      id,
      key,
    ]);
    const row = outboxRow(sqlite, key);
    if (row !== null) {
      sqlite.run("UPDATE whatsapp_outbox SET message_id = ?, seal = ? WHERE message_id = ?", [
        id,
        seal.of({ ...row, messageId: id }),
        key,
      ]);
    }
  }
  putBackBefore(sqlite, 33);
}

describe("message ids stored keyed (probe 86a F2)", () => {
  test("a delivery stores no id of Meta's: the dedupe record, the outbox row, its reply and its statuses hold keys", async () => {
    const { target, graph, worker } = outboxSetup(cleanups);
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.HBgLMTY1MDU1NTEyMzQ=", from: "16505551234" }] }),
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(1);
    const replyId = graph.sent[0]!.id;
    await deliver(target, notification({ statuses: [{ id: replyId, status: "delivered" }] }));
    const stored = storedIds(target.db.$client);
    expect(stored).not.toContain("wamid");
    expect(stored).not.toContain("HBgL");
    expect(stored).toContain(storedId(target, "wamid.HBgLMTY1MDU1NTEyMzQ="));
    // The status names the reply as its row does.
    expect(
      target.db.$client
        .query(
          "SELECT count(*) AS n FROM whatsapp_statuses s JOIN whatsapp_outbox o ON o.reply_message_id = s.message_id",
        )
        .get(),
    ).toEqual({ n: 1 });
  });

  test("0033 rewrites what the release before stored: nothing of Meta's ids is left; a redelivery is a duplicate, a status finds its reply, a reply owed is sent, a row altered in the file stays refused", async () => {
    const { target, graph, clock, worker } = outboxSetup(cleanups);
    const sqlite = target.db.$client;
    // Sent before the upgrade, with a status.
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.SENT", from: "16505550001", text: "one" }] }),
    );
    await worker.drain();
    const replyId = graph.sent[0]!.id;
    await deliver(target, notification({ statuses: [{ id: replyId, status: "sent" }] }));
    // Owed at the upgrade: Graph failed its first send, its reply is stored.
    graph.failNext({ status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.OWED", from: "16505550002", text: "two" }] }),
    );
    await worker.drain();
    expect(graph.sent).toHaveLength(1);
    // Owed, and its text changed in the file (after the release before sealed it).
    graph.failNext({ status: 503 });
    await deliver(
      target,
      notification({ messages: [{ id: "wamid.ALTERED", from: "16505550003", text: "three" }] }),
    );
    await worker.drain();
    storedAsBefore(target, ["wamid.SENT", replyId, "wamid.OWED", "wamid.ALTERED"]);
    sqlite.run("UPDATE whatsapp_outbox SET reply = 'pay here' WHERE message_id = 'wamid.ALTERED'");
    expect(storedIds(sqlite)).toContain("wamid.OWED");

    const status = applyMigrations(
      target.db,
      upgradeSealing(target.config.audit.secretKey).companions,
    );
    expect(status.appliedNow).toContain("0033_whatsapp_message_ids_keyed");
    expect(storedIds(sqlite)).not.toContain("wamid");

    // The message sent before is a duplicate, not answered again.
    const again = await deliver(
      target,
      notification({ messages: [{ id: "wamid.SENT", from: "16505550001", text: "one" }] }),
    );
    expect(await again.json()).toMatchObject({ accepted: 0, duplicates: 1 });
    // Its reply's status: the one stored before is a duplicate, a new one is stored beside it.
    const statuses = await deliver(
      target,
      notification({
        statuses: [
          { id: replyId, status: "sent" },
          { id: replyId, status: "read" },
        ],
      }),
    );
    expect(await statuses.json()).toMatchObject({ statuses: 1, duplicates: 1 });
    expect(
      sqlite
        .query(
          "SELECT s.status FROM whatsapp_statuses s JOIN whatsapp_outbox o ON o.reply_message_id = s.message_id ORDER BY s.status",
        )
        .all(),
    ).toEqual([{ status: "read" }, { status: "sent" }]);
    // The reply owed goes at its retry, as stored; the altered one is refused.
    clock.advance(5_000);
    await worker.drain();
    expect(graph.sent.map((message) => [message.to, message.body])).toEqual([
      ["16505550001", "reply to: one"],
      ["16505550002", "reply to: two"],
    ]);
    expect(outboxRow(sqlite, storedId(target, "wamid.OWED"))?.state).toBe("sent");
    expect(outboxRow(sqlite, storedId(target, "wamid.ALTERED"))).toMatchObject({
      state: "failed",
      reply: "pay here",
    });
  });

  test("0033 run again on a file put back before it (its migration rows deleted) leaves keyed ids as they are: a redelivery is still a duplicate, a reply's status still finds it (probe 88b F2)", async () => {
    const { target, graph, worker } = outboxSetup(cleanups);
    const sqlite = target.db.$client;
    const message = notification({
      messages: [{ id: "wamid.ONCE", from: "16505550001", text: "one" }],
    });
    await deliver(target, message);
    await worker.drain();
    const replyId = graph.sent[0]!.id;
    await deliver(target, notification({ statuses: [{ id: replyId, status: "sent" }] }));
    const before = storedIds(sqlite);
    putBackBefore(sqlite, 33);
    const status = applyMigrations(
      target.db,
      upgradeSealing(target.config.audit.secretKey).companions,
    );
    expect(status.appliedNow).toContain("0033_whatsapp_message_ids_keyed");
    expect(storedIds(sqlite)).toBe(before);
    const again = await deliver(target, message);
    expect(await again.json()).toMatchObject({ accepted: 0, duplicates: 1 });
    await worker.drain();
    expect(graph.sent).toHaveLength(1);
    const statusAgain = await deliver(
      target,
      notification({ statuses: [{ id: replyId, status: "sent" }] }),
    );
    expect(await statusAgain.json()).toMatchObject({ statuses: 0, duplicates: 1 });
    // The row the worker sent still matches its seal: read through the worker, not refused.
    expect(outboxRow(sqlite, storedId(target, "wamid.ONCE"))?.state).toBe("sent");
  });
});
