/**
 * @module
 * The WhatsApp outbox worker: turns accepted messages (rows written by the webhook in the same
 * transaction as their dedupe record, before its 200) into exactly one reply each.
 *
 * How it works. Every `pollIntervalMs`, and at once when the webhook accepts a message, the worker
 * claims up to `batchSize` due rows with one statement:
 *
 *   UPDATE whatsapp_outbox SET lease_until = now + lease, lease_owner = me
 *   WHERE id IN (SELECT id … WHERE state = 'pending' AND next_attempt_at <= now
 *                AND (lease_until IS NULL OR lease_until < now)
 *                AND no earlier pending row of the same sender … LIMIT n)
 *   RETURNING …
 *
 * A write statement holds SQLite's write lock from its first step, so two processes on one file
 * never claim the same row; a lease whose owner died expires and the row is claimed again. Only
 * the oldest pending row of a sender is claimable, so one sender's messages are answered in order
 * and never two at once (one conversation, no interleaved turns).
 *
 * For each claimed row: (1) if it has no reply yet, one chat turn (`ChatTurns.converse`, the
 * sender's conversation continued) or a fixed notice (a non-text message, a text the chat message
 * rules refuse), and the reply is stored on the row — guarded by the lease — before anything is
 * sent; (2) the lease is checked and extended to cover the send and its mark; (3) `POST
 * …/messages`; (4) one UPDATE marks the row sent and clears the number (waiting out another
 * connection's write lock inside the lease, markSent). A transient failure (network, 429, 5xx, a
 * temporary Graph code, chat unavailable) releases the lease with an exponential backoff; past
 * `giveUpAfterMs` since the message arrived, or at once on a permanent failure, the row is marked
 * failed, the number cleared, and `whatsapp.reply_failed` audited.
 *
 * Guarantees. Nothing accepted is lost: the row is committed before the 200 and stays pending until
 * sent or given up, across crashes and restarts. Nothing is sent twice, and no chat turn is run
 * twice, with two exceptions no design without an idempotency key at Graph can close:
 * - a crash (or SIGKILL) after Graph accepted a reply and before the one UPDATE that marks it sent:
 *   the row's lease expires and the reply is sent again. The window is one local statement long,
 *   or as long as another connection's lock holds it, at most the 30 s the lease leaves for it.
 * - a send that timed out after Graph accepted it: retried like any timeout.
 * - (for chat) a crash between the chat turn returning and its reply being stored runs the turn
 *   again on the next claim; the sender still gets one reply.
 * - (for chat) a turn still running `stopTurnGraceMs` after a stop began is aborted and runs
 *   again on the next claim.
 * A graceful shutdown (`stop()`) lets chat turns in flight finish for a while (a finished turn's
 * reply is kept on the row for the next process), then aborts the rest, and lets sends in flight
 * finish and be marked.
 */
import { and, asc, eq, gt, gte, inArray, isNotNull, isNull, lt, lte, or, sql } from "drizzle-orm";
import type { Clock } from "../../clock";
import { isDatabaseBusy } from "../../db/busy";
import type { AppDatabase } from "../../db/client";
import { outboxPending, whatsappOutbox } from "../../db/schema";
import { type Logger, storedText } from "../../logging/logger";
import type { AuditLog } from "../../plugins/audit/log";
import { showsSomething } from "../../visible-text";
import type { ChatTurns } from "../chat/contract";
import type { GraphClient, SendOutcome } from "./graph-client";
import type { OutboxSeal } from "./outbox-seal";
import { replyPieces } from "./reply-parts";
import type { WhatsAppMetrics } from "./whatsapp-metrics";

export type OutboxRow = typeof whatsappOutbox.$inferSelect;

/** The fixed answer to an image, audio, sticker, location… (anything but text). */
export const NON_TEXT_REPLY =
  "Thanks for your message! I can only read text for now — please type your question and I'll be glad to help.";
/**
 * The fixed answer to a text the chat message rules refuse (too long, control characters,
 * malformed Unicode, nothing visible): it goes to no chat turn, altered or not.
 */
export const REFUSED_TEXT_REPLY =
  "Thanks for your message! I couldn't read it as it was sent — please type your question as plain text, up to 4000 characters.";
/**
 * The answer to a text the chat model refused for what it says (its content filter or policy):
 * the same text is refused again, so it is not retried.
 */
export const UPSTREAM_REFUSED_REPLY =
  "Thanks for your message! I can't answer that one — please rephrase your question and send it again.";
/**
 * Sent for a chat reply with nothing visible in it (empty, or white space alone: a model that
 * finished with no content). Graph refuses an empty text for good, so the sender heard nothing for
 * a turn that ran and was charged (probe 61b F2); white space alone is no answer either.
 */
export const EMPTY_CHAT_REPLY =
  "Thanks for your message! I don't have an answer to that one — please rephrase your question and send it again.";
/** The answer when the sender's daily chat budget is spent. */
export const OVER_BUDGET_REPLY =
  "Thanks for your message! You've reached today's limit for this assistant; please try again tomorrow.";

export interface OutboxSettings {
  /** How often due rows are looked for (the webhook also wakes the worker at once). */
  pollIntervalMs: number;
  batchSize: number;
  /** A claim's lease: longer than a chat turn (`chatTimeoutMs`) plus the store that follows. */
  leaseMs: number;
  /** A chat turn longer than this is aborted and retried later. */
  chatTimeoutMs: number;
  /** One Graph request; the lease is extended by this plus a margin before each send. */
  sendTimeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** A reply still failing this long after its message arrived is given up. */
  giveUpAfterMs: number;
  /**
   * How long a stop lets chat turns in flight finish before aborting them: within the 75 s that
   * compose.yaml gives a stop, with the 10 s drain, a turn's store waiting out a lock (10 s) and a
   * reply's mark waiting out one (30 s).
   */
  stopTurnGraceMs: number;
}

export const DEFAULT_OUTBOX_SETTINGS: OutboxSettings = {
  pollIntervalMs: 1000,
  batchSize: 16,
  leaseMs: 60_000,
  chatTimeoutMs: 45_000,
  sendTimeoutMs: 10_000,
  retryBaseMs: 1000,
  retryMaxMs: 60_000,
  giveUpAfterMs: 15 * 60_000,
  stopTurnGraceMs: 15_000,
};

const SEND_LEASE_MARGIN_MS = 5000;
/** How many pending rows one forged-blocker check looks at (refuseForgedBlockers). */
export const BLOCKER_WINDOW = 512;
/**
 * How far ahead of this clock an arrival may be and still be one the intake wrote (a clock stepped
 * back since): a day, past which Graph takes no free reply anyway.
 */
const ARRIVAL_AHEAD_LIMIT_MS = 24 * 60 * 60_000;
/**
 * How long storing a reply, or marking one Graph accepted as sent, may wait out another
 * connection's write lock, inside the row's lease (outlastLock): given up on the connection's
 * 50 ms, the row stayed pending and the next claim ran the turn or sent the reply again (probes
 * 27g F1: a 5 s lock, 27h F3).
 */
const LOCK_WAIT_MS = 30_000;
const LOCK_RETRY_MS = 50;

/** Why a row that fails its seal was given up (its `last_error`). */
export const TAMPERED_REASON =
  "does not match its seal: written into the database file, not by Palisade; not sent";

export interface OutboxWorkerOptions {
  db: AppDatabase;
  /** Checks each claimed row's seal before anything is done with it, and reseals each change. */
  seal: OutboxSeal;
  /** What Graph's id of a reply is stored as (whatsapp-crypto.ts messageIdKeyer), as statuses name it. */
  keyMessageId: (messageId: string) => string;
  /** Told of each row refused for its seal, once it is marked failed (outbox-seal.ts). */
  reportTampered: (row: { id: number | string; messageId: string }) => void;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  chat: ChatTurns;
  graph: GraphClient;
  metrics: WhatsAppMetrics;
  settings?: Partial<OutboxSettings>;
  /** Names this worker's leases; a random id per process when absent. */
  owner?: string;
}

type Produced =
  | { kind: "reply"; reply: string; conversationId: string | null }
  | { kind: "transient"; reason: string };

export class OutboxWorker {
  readonly owner: string;
  readonly settings: OutboxSettings;
  private readonly options: OutboxWorkerOptions;
  private timer: ReturnType<typeof setInterval> | null = null;
  private running: Promise<unknown> | null = null;
  /** Rows in hand whose seal was checked: only these are resealed when the worker changes them. */
  private readonly verified = new WeakSet<OutboxRow>();
  private again = false;
  /** Whether runs are meeting another connection's write lock (said once until one gets through). */
  private lockedOut = false;
  private stopping = false;
  /** The rows being processed (however the drain was started): what a stop waits for. */
  private readonly batches = new Set<Promise<unknown>>();
  /** Wakes a drain waiting for a row to finish, to claim what has just come (kick). */
  private wakeDrain: () => void = () => {};
  private readonly abort = new AbortController();
  /**
   * Where the forged-blocker check goes on from: the last pending row id it looked at, as the file
   * holds it (text), or null for the first.
   */
  private blockerSweepAfter: string | null = null;

  constructor(options: OutboxWorkerOptions) {
    this.options = options;
    this.owner = options.owner ?? `${process.pid}-${crypto.randomUUID()}`;
    this.settings = { ...DEFAULT_OUTBOX_SETTINGS, ...options.settings };
  }

  /** Starts polling (and answering kicks). */
  start(): void {
    if (this.timer || this.stopping) return;
    this.timer = setInterval(() => this.kick(), this.settings.pollIntervalMs);
    this.timer.unref();
    this.kick();
  }

  get started(): boolean {
    return this.timer !== null;
  }

  /**
   * A run that failed. A locked database (another process's long write, a backup) is said once,
   * at warn, until a run gets through: it was an error line with a stack every second per process
   * for as long as the lock lasted (probe 27e F3). The rows wait; nothing is lost.
   */
  private runFailed(error: unknown): void {
    if (!isDatabaseBusy(error)) {
      this.options.logger.error({ err: error }, "whatsapp outbox run failed");
      return;
    }
    if (this.lockedOut) return;
    this.lockedOut = true;
    this.options.logger.warn(
      {},
      "whatsapp outbox deferred: the database is locked; replies wait until it is free",
    );
  }

  /** Looks for due rows now (the webhook calls this after accepting a message). */
  kick(): void {
    if (!this.timer || this.stopping) return;
    if (this.running) {
      this.again = true;
      this.wakeDrain();
      return;
    }
    this.running = this.drain()
      .then(
        () => {
          this.lockedOut = false;
        },
        (error) => this.runFailed(error),
      )
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /**
   * Claims and processes due rows until none is left and none is in hand; resolves to how many it
   * processed. Up to `batchSize` rows are in hand at once, and more are claimed as soon as one is
   * done or a message arrives (kick): claimed a batch at a time, each batch waited for whole, one
   * sender's slow chat turn (a long answer from a slow model, up to the chat timeout) held every
   * other sender's reply, 10 s behind a 10 s turn (probe 81a F2). A sender's own messages stay in
   * order: a sender's next one is not claimed while an earlier one is pending (claim).
   */
  async drain(): Promise<number> {
    let total = 0;
    const inHand = new Set<Promise<void>>();
    try {
      for (;;) {
        const room = this.settings.batchSize - inHand.size;
        if (!this.stopping && room > 0) {
          try {
            const now = this.options.clock.now();
            this.refuseForgedBlockers(now);
            for (const row of this.claim(now, room)) {
              const processed: Promise<void> = this.process(row).finally(() => {
                inHand.delete(processed);
                this.batches.delete(processed);
              });
              inHand.add(processed);
              this.batches.add(processed);
              total++;
            }
            this.lockedOut = false;
          } catch (error) {
            // Another connection's lock (a backup, an erasure, another process's write) met with
            // rows in hand is waited out here: the next row done, message or poll claims again.
            // Ending the run there waited for every row in hand, a slow turn's too, before
            // anything more was claimed (probe 81d F1: 10 s behind one turn after a 1.3 s lock).
            if (inHand.size === 0 || !isDatabaseBusy(error)) throw error;
            this.runFailed(error);
          }
        }
        if (inHand.size === 0) return total;
        const woken = new Promise<void>((resolve) => {
          this.wakeDrain = resolve;
        });
        await Promise.race([...inHand, woken]);
      }
    } finally {
      // A claim that failed (a lock) ends the run once what it had in hand is done.
      await Promise.all(inHand);
    }
  }

  /**
   * Stops claiming, lets chat turns in flight finish for up to `stopTurnGraceMs` (an aborted
   * one was charged and ran again at the next claim: probe 28d F1), then aborts those left and
   * waits for sends in flight to be marked. Called at shutdown, before the database closes, and
   * when the schema changed under the process.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const inFlight = () => Promise.all([this.running, ...this.batches]);
    let graceOver: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      inFlight(),
      new Promise<void>((resolve) => {
        graceOver = setTimeout(resolve, this.settings.stopTurnGraceMs);
      }),
    ]);
    clearTimeout(graceOver);
    this.abort.abort();
    await inFlight();
  }

  /** Stops the timer at once (close without waiting). */
  close(): void {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.abort.abort();
  }

  /**
   * One statement: due, unleased (or lease expired), oldest pending of its sender. The schedule
   * and the lease are not sealed: one no worker writes — not a whole number, or further ahead
   * than any backoff, Graph's longest Retry-After or lease reaches (the give-up time is past all
   * of them) — is read as due and expired, so a genuine row whose times were written into the file
   * is claimed, and answered or given up, instead of holding its sender's messages back for good
   * (probe 29c F2).
   */
  claim(now: number, limit = this.settings.batchSize): OutboxRow[] {
    const { db } = this.options;
    const o = whatsappOutbox;
    const unwritable = this.unwritableAt(now);
    const due = db
      .select({ id: o.id })
      .from(o)
      .where(
        and(
          outboxPending(o.state),
          or(lte(o.nextAttemptAt, now), unwritable(o.nextAttemptAt)),
          this.unleased(now),
          sql`NOT EXISTS (SELECT 1 FROM whatsapp_outbox AS earlier WHERE earlier.sender_hash = ${o.senderHash} AND earlier.state = 'pending' AND earlier.id < ${o.id})`,
        ),
      )
      .orderBy(asc(o.id))
      .limit(limit);
    return db
      .update(o)
      .set({ leaseUntil: now + this.settings.leaseMs, leaseOwner: this.owner })
      .where(inArray(o.id, due))
      .returning()
      .all();
  }

  /**
   * A schedule or lease no worker writes at `now`: not a whole number, or further ahead than any
   * backoff, Graph's longest Retry-After or lease reaches (the give-up time is past all of them).
   */
  private unwritableAt(now: number) {
    const horizon = now + this.settings.giveUpAfterMs;
    return (column: typeof whatsappOutbox.nextAttemptAt | typeof whatsappOutbox.leaseUntil) =>
      or(sql`typeof(${column}) != 'integer'`, gt(column, horizon));
  }

  /** A row no worker holds at `now`: no lease, one expired, or one no worker writes. */
  private unleased(now: number) {
    const o = whatsappOutbox;
    return or(isNull(o.leaseUntil), lt(o.leaseUntil, now), this.unwritableAt(now)(o.leaseUntil));
  }

  /**
   * For a service that sends no replies (WHATSAPP_ACCESS_TOKEN unset, so no worker runs): the
   * pending rows past their give-up time, not leased, given up as a worker gives them up when it
   * claims them (failed, number and text cleared, resealed if their seal held, audited), a batch a
   * call. Kept pending, they kept every sender's number and text in clear for as long as the token
   * stayed unset, past retention, and a token set later gave them up unanswered anyway (probe 81a
   * F3). Returns how many it gave up.
   */
  giveUpOverdue(now: number): number {
    const o = whatsappOutbox;
    const { giveUpAfterMs, leaseMs, batchSize } = this.settings;
    const overdue = this.options.db
      .select({ id: o.id })
      .from(o)
      .where(
        and(
          outboxPending(o.state),
          this.unleased(now),
          // As pastGiveUp reads an arrival: one no intake writes counts as past it.
          or(
            lte(o.receivedAt, now - giveUpAfterMs),
            gt(o.receivedAt, now + ARRIVAL_AHEAD_LIMIT_MS),
            sql`typeof(${o.receivedAt}) != 'integer'`,
          ),
        ),
      )
      .orderBy(asc(o.id))
      .limit(batchSize);
    const rows = this.options.db
      .update(o)
      .set({ leaseUntil: now + leaseMs, leaseOwner: this.owner })
      .where(and(inArray(o.id, overdue), eq(o.state, "pending")))
      .returning()
      .all();
    for (const row of rows) {
      if (!this.options.seal.intact(row)) {
        this.refuseTampered(row, { whoseLease: "mine" });
        continue;
      }
      this.verified.add(row);
      this.failPermanent(
        row,
        "not answered within the give-up time of its arrival: no reply is sent while WHATSAPP_ACCESS_TOKEN is unset",
      );
    }
    return rows.length;
  }

  /**
   * A sender's messages are answered oldest first, so a pending row that is not due (a retry later,
   * or leased) holds up the sender's later ones. A row written into the file can be made to hold
   * them up (until its schedule or lease comes, up to the give-up time: one further ahead is
   * claimed as due), and is never claimed to be refused: so the oldest pending row of each sender
   * with a due message waiting behind it is checked here, and refused if it does not match its
   * seal. A genuine row in backoff or in flight matches, and is left alone.
   *
   * Each call looks at the next `BLOCKER_WINDOW` pending rows after where the last one stopped,
   * and starts again from the first once it reaches the end: it runs at every claim, and reading
   * every pending row each time took 30–60 ms of the event loop at 50,000 replies in backoff (a
   * Graph outage; probe 88e F4). A forged blocker is found within one sweep of the pending rows.
   */
  refuseForgedBlockers(now: number): void {
    const o = whatsappOutbox;
    const { db } = this.options;
    // Ids as the file holds them: one past 2^53 read as a number is rounded, and a cursor left on
    // a rounded id read the same window again for good (probe 89d F1); the first window starts
    // below every id, 0 and negative ones too, which the claim takes as any other.
    const idText = sql<string>`CAST(${o.id} AS TEXT)`;
    const after = this.blockerSweepAfter;
    const window = db
      .select({ id: idText })
      .from(o)
      .where(
        and(
          outboxPending(o.state),
          // The first window from the least id SQLite holds: a range, as every later one.
          after === null
            ? sql`${o.id} >= -9223372036854775808`
            : sql`${o.id} > CAST(${after} AS INTEGER)`,
        ),
      )
      .orderBy(asc(o.id))
      .limit(BLOCKER_WINDOW)
      .all();
    const first = window[0]?.id;
    const last = window.at(-1)?.id;
    if (first === undefined || last === undefined) {
      this.blockerSweepAfter = null;
      return;
    }
    const blockers = db
      .select({ row: o, idText })
      .from(o)
      .where(
        and(
          outboxPending(o.state),
          sql`${o.id} >= CAST(${first} AS INTEGER)`,
          sql`${o.id} <= CAST(${last} AS INTEGER)`,
          or(gt(o.nextAttemptAt, now), and(isNotNull(o.leaseUntil), gte(o.leaseUntil, now))),
          // The oldest pending row of its sender…
          sql`NOT EXISTS (SELECT 1 FROM whatsapp_outbox AS earlier WHERE earlier.sender_hash = ${o.senderHash} AND earlier.state = 'pending' AND earlier.id < ${o.id})`,
          // …with a due one waiting behind it.
          sql`EXISTS (SELECT 1 FROM whatsapp_outbox AS later WHERE later.sender_hash = ${o.senderHash} AND later.state = 'pending' AND later.id > ${o.id} AND later.next_attempt_at <= ${now})`,
        ),
      )
      .orderBy(asc(o.id))
      .limit(this.settings.batchSize)
      .all();
    // A full batch may leave more of the window behind it: the next call goes on after its last.
    const lookedAt = blockers.length === this.settings.batchSize ? blockers.at(-1)!.idText : last;
    this.blockerSweepAfter = window.length < BLOCKER_WINDOW && lookedAt === last ? null : lookedAt;
    for (const { row } of blockers) {
      if (!this.options.seal.intact(row)) this.refuseTampered(row, { whoseLease: "any" });
    }
  }

  private async process(row: OutboxRow): Promise<void> {
    const { clock, logger } = this.options;
    try {
      // Before a chat turn or a send: a row Palisade did not write is neither (outbox-seal.ts),
      // and nor is a copy of one: the seal does not cover the row's id, and someone with the file
      // who drops the unique index on the message id could insert a genuine row many times over,
      // each copy a send of one reply (probe 26g F1). Every copy, the first included, is refused.
      if (!this.options.seal.intact(row) || !this.onlyRowOf(row)) {
        return this.refuseTampered(row, { whoseLease: "mine" });
      }
      this.verified.add(row);
      // Past its give-up time before anything was tried, or with a reply kept at a stop: given
      // up, not answered late (a turn run then is charged, and Graph refuses a free reply past 24
      // hours anyway; probe 28d F3).
      if (this.pastGiveUp(row, clock.now())) {
        return this.failPermanent(
          row,
          attemptsBefore(row) > 0
            ? `gave up after ${attemptsBefore(row)} attempts: ${row.lastError ?? "no reason kept"}`
            : row.reply !== null
              ? "its reply, kept at a stop, was not sent within the give-up time of its arrival"
              : "not answered within the give-up time of its arrival",
        );
      }
      let reply = row.reply;
      if (reply === null) {
        const produced = await this.produceReply(row);
        if (produced.kind === "transient") {
          return this.stopping ? this.release(row) : this.failTransient(row, produced.reason);
        }
        // Kept even when stopping: the turn ran (stored and charged), and the next process sends
        // this reply rather than run the turn again (probe 28c F1: two turns, charged twice).
        // A lock here would run the turn again at the next claim (probe 27h F3): waited out too.
        const stored = await this.outlastLock(
          () => this.storeReply(row, produced.reply, produced.conversationId),
          row.leaseUntil ?? 0,
        );
        if (!stored) return;
        reply = produced.reply;
      }
      if (this.stopping) return this.release(row);
      if (row.recipient === null) return this.failPermanent(row, "no recipient kept");
      // Nothing that shows: empty, white space, zero-width or filler characters, controls (the
      // rule a chat message itself must meet; probe 62b F1: `trim()` let them through).
      if (!showsSomething(reply)) {
        logger.warn(
          { outboxId: this.storedId(row) },
          "the chat reply has nothing visible in it; the sender is sent a fixed notice",
        );
        reply = EMPTY_CHAT_REPLY;
      }
      await this.send(row, row.recipient, reply);
    } catch (error) {
      logger.error({ err: error, outboxId: this.storedId(row) }, "whatsapp outbox row failed");
      // A row refused for its seal but not yet marked (another process's lock) is left as it is:
      // its lease expires and the next claim refuses it, and reports it, once.
      if (!this.verified.has(row)) return;
      try {
        this.failTransient(row, "internal error");
      } catch {
        // The lease expires and another run takes the row.
      }
    }
  }

  /**
   * Sends the reply's parts Graph has not accepted yet, each under a lease extended to cover it,
   * each accepted one recorded (its count, and where the rest begins) before the next is sent: a
   * retry, or the next process after a stop or a crash, cuts and sends the rest, never a part
   * again; the last is marked as the whole reply's sending.
   */
  private async send(row: OutboxRow, recipient: string, reply: string): Promise<void> {
    const { clock, logger } = this.options;
    const resumed = resumePoint(row, reply);
    const parts = replyPieces(reply.slice(resumed.at));
    const total = resumed.sent + parts.length;
    for (let part = 0; part < parts.length; part++) {
      if (part > 0 && this.stopping) return this.release(row);
      const number = resumed.sent + part + 1;
      // The lease must cover the send: extended only if it is still ours (not expired and taken).
      const sendLeaseUntil =
        clock.now() + this.settings.sendTimeoutMs + SEND_LEASE_MARGIN_MS + LOCK_WAIT_MS;
      if (!this.extendLease(row, sendLeaseUntil)) {
        logger.warn(
          { outboxId: this.storedId(row), part: number, parts: total },
          "whatsapp outbox lease lost before sending; not sent",
        );
        return;
      }
      const outcome = await this.options.graph.sendText({
        phoneNumberId: row.phoneNumberId,
        to: recipient,
        body: parts[part]!.text,
      });
      if (outcome.kind === "sent" && part < parts.length - 1) {
        const restAt = resumed.at + parts[part]!.next;
        if (
          await this.outlastLock(() => this.recordPartSent(row, number, restAt), sendLeaseUntil)
        ) {
          continue;
        }
        logger.warn(
          { outboxId: this.storedId(row), part: number, parts: total },
          "whatsapp outbox lease lost after a part was sent; the rest is sent by the next claim",
        );
        return;
      }
      const which = total > 1 ? `part ${number} of ${total}: ` : "";
      return this.settle(
        row,
        outcome.kind === "sent" ? outcome : { ...outcome, reason: `${which}${outcome.reason}` },
        sendLeaseUntil,
        total,
      );
    }
  }

  /**
   * Records that Graph accepted the reply's first `count` parts, the rest beginning at `restAt`
   * (the row stays pending); false if the lease was lost (taken over past its end): the part may
   * then be sent again by the next claim.
   */
  private recordPartSent(row: OutboxRow, count: number, restAt: number): boolean {
    const seal = this.options.seal.of({ ...row, replySentChars: restAt });
    const recorded = this.options.db
      .update(whatsappOutbox)
      .set({ replyPartsSent: count, replySentChars: restAt, seal })
      .where(this.mine(row))
      .returning({ id: whatsappOutbox.id })
      .all();
    if (recorded.length !== 1) return false;
    row.replyPartsSent = count;
    row.replySentChars = restAt;
    row.seal = seal;
    return true;
  }

  /** Whether the row is the only one of its inbound message, as the unique index keeps it. */
  private onlyRowOf(row: OutboxRow): boolean {
    const [copies] = this.options.db
      .select({ n: sql<number>`count(*)` })
      .from(whatsappOutbox)
      .where(eq(whatsappOutbox.messageId, row.messageId))
      .all();
    return copies?.n === 1;
  }

  private async produceReply(row: OutboxRow): Promise<Produced> {
    if (row.kind === "refused") {
      return { kind: "reply", reply: REFUSED_TEXT_REPLY, conversationId: null };
    }
    if (row.kind === "unsupported" || row.body === null) {
      return { kind: "reply", reply: NON_TEXT_REPLY, conversationId: null };
    }
    const signal = AbortSignal.any([
      this.abort.signal,
      AbortSignal.timeout(this.settings.chatTimeoutMs),
    ]);
    const owner = { kind: "whatsapp" as const, id: row.senderHash };
    // The turn's request id, which chat logs and audits, names the row as the worker's own lines do
    // (`outboxId`), never the message id: Meta's `wamid.…` is base64 holding the sender's number
    // (probe 86a F2: a budget refusal's audit row kept it 90 days).
    const requestId = `whatsapp-outbox-${this.storedId(row)}`;
    const input = { owner, message: row.body, requestId, signal };
    try {
      const previous = this.conversationOf(row.senderHash);
      let outcome = await this.options.chat.converse(
        previous === null ? input : { ...input, conversationId: previous },
      );
      // The conversation is gone (erased, expired): start a new one.
      if (outcome.kind === "not_found") outcome = await this.options.chat.converse(input);
      switch (outcome.kind) {
        case "reply":
          return {
            kind: "reply",
            reply: outcome.turn.reply,
            conversationId: outcome.turn.conversationId,
          };
        case "over_budget":
          return { kind: "reply", reply: OVER_BUDGET_REPLY, conversationId: previous };
        case "refused":
          return { kind: "reply", reply: UPSTREAM_REFUSED_REPLY, conversationId: previous };
        case "not_found":
          return { kind: "transient", reason: "chat: conversation not found" };
        // The sender's earlier messages are still being answered: this one waits its turn.
        case "too_many_turns":
          return { kind: "transient", reason: "chat: too many turns in flight" };
        // A WhatsApp sender is never erased from under a turn; were it, the row is tried again.
        case "owner_gone":
          return { kind: "transient", reason: "chat: owner gone" };
      }
    } catch (error) {
      const reason = error instanceof Error ? storedText(error.message, 200) : "chat failed";
      return { kind: "transient", reason: `chat: ${reason}` };
    }
  }

  /** The sender's latest conversation, continued by the next turn. */
  private conversationOf(senderHash: string): string | null {
    const o = whatsappOutbox;
    const found = this.options.db
      .select({ id: o.conversationId })
      .from(o)
      .where(and(eq(o.senderHash, senderHash), isNotNull(o.conversationId)))
      .orderBy(sql`${o.id} DESC`)
      .limit(1)
      .get();
    return found?.id ?? null;
  }

  /**
   * The row's id as the file holds it, for what a log line or an audit record names. Past 2^53 a
   * JavaScript number is the stored id rounded (a row moved there in the database file), an id no
   * row has: it is read again as text, by the message id, which is unique (probe 53a F2).
   */
  private storedId(row: OutboxRow): number | string {
    if (Number.isSafeInteger(row.id)) return row.id;
    const o = whatsappOutbox;
    const stored = this.options.db
      .select({ id: sql<string>`CAST(${o.id} AS TEXT)` })
      .from(o)
      .where(eq(o.messageId, row.messageId))
      .get();
    return stored?.id ?? String(row.id);
  }

  /**
   * The row as this worker leased it, named by its message id (unique), never by the id it read:
   * an id past 2^53 (rows moved there in the file; the seal does not cover the id) reads rounded,
   * and a write by it marked another row sent while the one sent stayed pending, re-leased every
   * minute (probe 52a F2).
   */
  private mine(row: OutboxRow) {
    const o = whatsappOutbox;
    return and(
      eq(o.messageId, row.messageId),
      eq(o.leaseOwner, this.owner),
      eq(o.state, "pending"),
    );
  }

  /**
   * Stores the reply once (the inbound text is no longer needed), resealed; false if the lease was
   * lost. The row in hand is updated to match, so later writes seal what the file holds.
   */
  private storeReply(row: OutboxRow, reply: string, conversationId: string | null): boolean {
    const now = this.options.clock.now();
    const seal = this.options.seal.of({ ...row, reply, body: null });
    const result = this.options.db
      .update(whatsappOutbox)
      .set({ reply, conversationId, body: null, leaseUntil: now + this.settings.leaseMs, seal })
      .where(and(this.mine(row), isNull(whatsappOutbox.reply)))
      .returning({ id: whatsappOutbox.id })
      .all();
    if (result.length !== 1) return false;
    Object.assign(row, { reply, conversationId, body: null, seal });
    return true;
  }

  private extendLease(row: OutboxRow, until: number): boolean {
    const now = this.options.clock.now();
    const result = this.options.db
      .update(whatsappOutbox)
      .set({ leaseUntil: until })
      .where(and(this.mine(row), sql`${whatsappOutbox.leaseUntil} >= ${now}`))
      .returning({ id: whatsappOutbox.id })
      .all();
    return result.length === 1;
  }

  private release(row: OutboxRow): void {
    this.options.db
      .update(whatsappOutbox)
      .set({ leaseUntil: null, leaseOwner: null })
      .where(this.mine(row))
      .run();
  }

  private async settle(
    row: OutboxRow,
    outcome: SendOutcome,
    leaseUntil: number,
    parts: number,
  ): Promise<void> {
    if (outcome.kind === "sent") {
      await this.markSent(row, outcome.messageId, leaseUntil, parts);
      this.options.metrics.replies.labels("sent").inc();
      return;
    }
    // What Graph refused is recorded as its acceptance is: waiting out another connection's lock
    // within the send's lease. Thrown at once, the reason was never logged, the row sat out its
    // lease, and a permanent refusal was sent once more (probe 43a, fix note).
    await this.outlastLock(() => {
      if (outcome.kind === "permanent") this.failPermanent(row, outcome.reason);
      else this.failTransient(row, outcome.reason, outcome.retryAfterMs);
    }, leaseUntil);
  }

  /**
   * The one statement between Graph's acceptance and our record of it (see the header). Another
   * connection's write lock is waited out, a try every 50 ms, while the lease taken for the send
   * still holds (by the clock and by the time actually waited, whichever ends first): no other
   * worker claims the row meanwhile, so the reply is not sent twice.
   */
  private async markSent(
    row: OutboxRow,
    messageId: string,
    leaseUntil: number,
    parts: number,
  ): Promise<void> {
    await this.outlastLock(() => {
      this.options.db
        .update(whatsappOutbox)
        .set({
          state: "sent",
          replyPartsSent: parts,
          replyMessageId: messageId ? this.options.keyMessageId(messageId) : null,
          recipient: null,
          body: null,
          seal: this.options.seal.of({ ...row, recipient: null, body: null }),
          leaseUntil: null,
          leaseOwner: null,
          attempts: attemptsBefore(row) + 1,
          finishedAt: this.options.clock.now(),
          lastError: null,
        })
        .where(eq(whatsappOutbox.messageId, row.messageId))
        .run();
    }, leaseUntil);
  }

  /**
   * Runs a write that must not be lost to another connection's write lock (the reply's storing,
   * its mark as sent), trying again every 50 ms while the row's lease holds (less its margin, by the
   * clock) and for 30 s at most (by the time actually waited): the row cannot be claimed by another
   * worker meanwhile, so waiting costs a delay, where giving up runs the turn or the send again.
   */
  private async outlastLock<T>(write: () => T, leaseUntil: number): Promise<T> {
    const waitUntil = performance.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        return write();
      } catch (error) {
        const leaseLeft = leaseUntil - SEND_LEASE_MARGIN_MS - this.options.clock.now();
        if (!isDatabaseBusy(error) || leaseLeft <= 0 || performance.now() >= waitUntil) throw error;
        await Bun.sleep(LOCK_RETRY_MS);
      }
    }
  }

  /**
   * Whether the row's message arrived longer than the give-up time ago. Its arrival time is not
   * sealed: one the intake never writes (not a whole number, or more than a day ahead of this
   * clock) counts as past it, so such a row is given up rather than retried for good with its
   * number kept (probe 29e F3). An arrival less far ahead is the clock stepped back (the rows of
   * the last minutes look ahead then): waited for, never given up unanswered (probe 29f F1).
   */
  private pastGiveUp(row: OutboxRow, now: number): boolean {
    const receivedAt: unknown = row.receivedAt;
    if (typeof receivedAt !== "number" || !Number.isSafeInteger(receivedAt)) return true;
    if (receivedAt > now + ARRIVAL_AHEAD_LIMIT_MS) return true;
    return now - receivedAt >= this.settings.giveUpAfterMs;
  }

  private failTransient(row: OutboxRow, reason: string, retryAfterMs?: number): void {
    const now = this.options.clock.now();
    const attempts = attemptsBefore(row) + 1;
    if (this.pastGiveUp(row, now)) {
      this.failPermanent(row, `gave up after ${attempts} attempts: ${reason}`);
      return;
    }
    const { retryBaseMs, retryMaxMs } = this.settings;
    const backoff = Math.min(retryMaxMs, retryBaseMs * 2 ** Math.min(attempts - 1, 20));
    // attemptsBefore keeps `attempts` at 1 or more, so the wait is never under the first one's.
    const jittered = backoff * (0.8 + Math.random() * 0.4);
    const delay = Math.max(jittered, retryAfterMs ?? 0);
    this.options.db
      .update(whatsappOutbox)
      .set({
        attempts,
        nextAttemptAt: Math.round(now + delay),
        leaseUntil: null,
        leaseOwner: null,
        lastError: storedText(reason, 300),
      })
      .where(this.mine(row))
      .run();
    this.options.metrics.replies.labels("retried").inc();
    this.options.logger.warn(
      { outboxId: this.storedId(row), attempts, retryInMs: Math.round(delay), reason },
      "whatsapp reply failed; will retry",
    );
  }

  /** Marks the row given up (failed, number and text cleared); true when this worker did. */
  private markFailed(row: OutboxRow, reason: string, where = this.mine(row)): boolean {
    const result = this.options.db
      .update(whatsappOutbox)
      .set({
        state: "failed",
        attempts: attemptsBefore(row) + 1,
        recipient: null,
        body: null,
        leaseUntil: null,
        leaseOwner: null,
        lastError: storedText(reason, 300),
        finishedAt: this.options.clock.now(),
        // Only a row whose seal was checked is resealed: Palisade never seals a row it did not
        // write, whatever path gives it up.
        ...(this.verified.has(row)
          ? { seal: this.options.seal.of({ ...row, recipient: null, body: null }) }
          : {}),
      })
      .where(where)
      .returning({ id: whatsappOutbox.id })
      .all();
    if (result.length !== 1) return false;
    this.options.metrics.replies.labels("failed").inc();
    return true;
  }

  /**
   * Refuses a row that does not match its seal: given up unsent, then reported, so that a failure
   * to mark it (another process's lock) leaves it to be refused, and reported, once later. A
   * blocker may be leased by another worker (it is refused all the same).
   */
  private refuseTampered(row: OutboxRow, { whoseLease }: { whoseLease: "any" | "mine" }): void {
    const o = whatsappOutbox;
    const where =
      whoseLease === "any"
        ? and(eq(o.messageId, row.messageId), eq(o.state, "pending"))
        : this.mine(row);
    if (this.markFailed(row, TAMPERED_REASON, where)) {
      this.options.reportTampered({ id: this.storedId(row), messageId: row.messageId });
    }
  }

  private failPermanent(row: OutboxRow, reason: string): void {
    if (!this.markFailed(row, reason)) return;
    this.options.audit.record({
      type: "whatsapp.reply_failed",
      outcome: "failure",
      actor: `whatsapp:${row.senderHash}`,
      detail: {
        outbox: this.storedId(row),
        attempts: attemptsBefore(row) + 1,
        reason: storedText(reason, 200),
      },
    });
  }
}

/**
 * Where the reply's rest begins and how many parts were sent before it, as the row records them.
 * The place is sealed with the row (outbox-seal.ts): a row that reached here matches its seal, so
 * it is one the worker wrote; none (no part sent yet, or a row the release before left mid-send,
 * which migration 0029 gave a place: outbox-offsets-upgrade.ts) is the start. The count is not
 * sealed and only numbers the parts: one the worker never writes is read as one.
 */
function resumePoint(row: OutboxRow, reply: string): { sent: number; at: number } {
  const at: unknown = row.replySentChars;
  if (typeof at !== "number" || !Number.isSafeInteger(at) || at <= 0 || at >= reply.length) {
    return { sent: 0, at: 0 };
  }
  const sent: unknown = row.replyPartsSent;
  const counted = typeof sent === "number" && Number.isSafeInteger(sent) && sent >= 1 && sent <= at;
  return { sent: counted ? sent : 1, at };
}

/**
 * The attempts a row has had. The count is not sealed: one no worker writes (negative, fractional,
 * text) is read as none, as a schedule no worker writes is read as due (claim). Read as it stood,
 * a count of -1,000,000,000 made each retry's backoff 2^-1e9 of a second, and a Graph answering
 * 500 was asked ~500 times a second until the row's give-up time (probe 81a F1).
 */
function attemptsBefore(row: OutboxRow): number {
  const stored: unknown = row.attempts;
  return typeof stored === "number" && Number.isSafeInteger(stored) && stored >= 0 ? stored : 0;
}
