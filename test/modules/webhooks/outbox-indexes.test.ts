/**
 * The outbox keeps finished rows for 30 days; the worker and the prune look for the few that are
 * not finished, or not as Palisade writes them. Each of their statements must find those through
 * the partial indexes of migration 0036: at 300,000 kept rows a claim that read the whole outbox
 * held the write lock 35 ms, at every accepted message and every second, and the prune 100 ms.
 */
import { expect, test } from "bun:test";
import { cleanupsAfterEach } from "../../support/cleanups";
import { outboxSetup } from "../../support/outbox";
import { planOf, statementsPrepared } from "../../support/query-plans";

const cleanups = cleanupsAfterEach();

/** A step that reads an outbox table whole (a scan of a partial index reads only its few rows). */
const readsWholeOutbox = (step: string) =>
  /^SCAN (whatsapp_outbox|earlier|later)\b/.test(step) &&
  !/USING (COVERING )?INDEX whatsapp_outbox_(owed|owed_sender|state_unwritten|finish_unwritten)\b/.test(
    step,
  );

test("the worker's claim, its checks and the prune find their rows through indexes, never by reading every kept row", async () => {
  const { target, worker, clock } = outboxSetup(cleanups);
  const sqlite = target.db.$client;
  const statements = await statementsPrepared(sqlite, async () => {
    await worker.drain();
    worker.refuseForgedBlockers(clock.now());
    worker.giveUpOverdue(clock.now());
    clock.advance(31 * 24 * 60 * 60_000);
    target.services.runMaintenance();
  });
  const outbox = [...new Set(statements.filter((text) => /"?whatsapp_outbox"?/.test(text)))];
  // The claim, the forged-blocker check, the give-up, the prune's stray states and its deletion.
  expect(outbox.length).toBeGreaterThanOrEqual(5);
  const wholeReads = outbox.flatMap((text) =>
    planOf(sqlite, text)
      .filter(readsWholeOutbox)
      .map((step) => `${step} in ${text.slice(0, 80)}`),
  );
  expect(wholeReads).toEqual([]);
});

test("the forged-blocker check, run at every claim, reads a window of the pending rows, never all of them (probe 88e F4: 36 ms of the event loop a claim at 50,000 replies in backoff)", async () => {
  const { target, worker, clock } = outboxSetup(cleanups);
  const sqlite = target.db.$client;
  const insert = sqlite.prepare(
    `INSERT INTO whatsapp_outbox (message_id, phone_number_id, sender_hash, kind, state,
       next_attempt_at, received_at) VALUES (?, 'p', 'h', 'text', 'pending', ?, ?)`,
  );
  // Rows for each statement to be prepared with: one waiting for its retry, one due behind it.
  insert.run("waiting", clock.now() + 60_000, clock.now());
  insert.run("due", clock.now(), clock.now());
  const statements = (
    await statementsPrepared(sqlite, () => worker.refuseForgedBlockers(clock.now()))
  ).filter((text) => /^select .* from "whatsapp_outbox"/.test(text));
  expect(statements.length).toBeGreaterThanOrEqual(1);
  const scans = statements.flatMap((text) =>
    planOf(sqlite, text)
      .filter((step) => /^SCAN (whatsapp_outbox|earlier|later)\b/.test(step))
      .map((step) => `${step} in ${text.slice(0, 80)}`),
  );
  expect(scans).toEqual([]);
});

test("the prune still deletes what it deleted: finished rows past retention, and finished rows whose finish time no worker writes", async () => {
  const { target, clock } = outboxSetup(cleanups);
  const sqlite = target.db.$client;
  const now = clock.now();
  const day = 24 * 60 * 60_000;
  const insert = sqlite.prepare(
    `INSERT INTO whatsapp_outbox (message_id, phone_number_id, sender_hash, kind, state,
       next_attempt_at, received_at, finished_at) VALUES (?, 'p', 'h', 'text', ?, ?, ?, ?)`,
  );
  insert.run("old-sent", "sent", now, now, now - 31 * day);
  insert.run("old-failed", "failed", now, now, now - 31 * day);
  insert.run("recent-sent", "sent", now, now, now - day);
  insert.run("sent-no-finish", "sent", now, now, null);
  insert.run("sent-text-finish", "sent", now, now, "yesterday");
  insert.run("sent-real-finish", "sent", now, now, now + 0.5);
  target.services.runMaintenance();
  const left = sqlite
    .query<{ message_id: string }, []>("SELECT message_id FROM whatsapp_outbox ORDER BY id")
    .all()
    .map((row) => row.message_id);
  expect(left).toEqual(["recent-sent"]);
});
