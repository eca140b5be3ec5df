/**
 * @module
 * The WhatsApp Cloud API webhook (`/webhooks/whatsapp`) and its outbox.
 *
 * - `GET`: Meta's subscription check. `hub.mode=subscribe` and a `hub.verify_token` equal
 *   (constant-time) to WHATSAPP_VERIFY_TOKEN echo `hub.challenge` as text/plain; anything else,
 *   including no configured token, is 403.
 * - `POST`: a notification. `X-Hub-Signature-256` is checked over the raw body bytes (kept by the
 *   request guard, which still applies the 256 KiB `webhooks` body limit) with WHATSAPP_APP_SECRET
 *   or, during a rotation, WHATSAPP_APP_SECRET_PREVIOUS; otherwise 401 `BAD_SIGNATURE`, audited
 *   (`webhook.signature_failed`) and counted. A verified notification is answered 200 at once, after
 *   each message it carries has been written, in one transaction, as its `webhook_events` row
 *   (provider `whatsapp`, the message id: the dedupe record) and its outbox row; a redelivered
 *   message id finds its row and adds nothing. A sender over RATE_LIMIT_WHATSAPP_SENDER messages a
 *   minute (counted per keyed hash of the number, not per address: every delivery comes from Meta)
 *   gets no reply, and `whatsapp.sender_limited` is audited. Only a message id seen for the first
 *   time spends the sender's limit, also when Meta redelivers it concurrently to one or several
 *   processes: the dedupe row is inserted first, as a claim (`type` = `message.claimed`; the
 *   primary key lets one delivery win), the limiter is asked only by the winner, and the claim
 *   becomes the final record together with the outbox row in one transaction. Only a final record
 *   makes a delivery a duplicate (200): one that meets a claim still running (another delivery
 *   storing the message now, or one that failed or died before finishing it) is answered 503 with
 *   `Retry-After`, so Meta delivers it again, since that claim may never become a record (probe 43a
 *   F1: answered 200 "duplicate", the message whose first delivery then failed was never
 *   answered). A delivery whose write fails gives its claim back; a claim left by a crash (or one
 *   that could not be given back) is taken over after CLAIM_LEASE_MS. Status callbacks (sent,
 *   delivered, read, failed) go to `whatsapp_statuses`, one row per message and status.
 *
 * The replies are sent by the outbox worker (outbox.ts): started with the app when both the app
 * secret and the access token are set, stopped at shutdown.
 */

import { TypeCompiler } from "@sinclair/typebox/compiler";
import { and, eq, inArray, lt, sql } from "drizzle-orm";
import { Elysia, t } from "elysia";
import { DAY_MS } from "../../clock";
import type { Core } from "../../core";
import type { AppDatabase } from "../../db/client";
import { IdSequenceError } from "../../db/id-sequence";
import { preparedOnUse } from "../../db/prepared-on-use";
import {
  outboxFinishUnwritten,
  outboxStateUnwritten,
  webhookEvents,
  whatsappOutbox,
  whatsappStatuses,
} from "../../db/schema";
import { idsWithinBytes } from "../../db/text-bounded";
import { STOP_LOCK_WAIT_MS, WaitingWrites } from "../../db/waiting-writes";
import { AppError, problemResponses } from "../../errors";
import {
  auditedOncePerWindow,
  type FirstInWindow,
  REFUSAL_AUDIT_WINDOW_MS,
} from "../../plugins/audit/once-per-window";
import { READ_PARAMETERS_KEY, type ReadParameter } from "../../plugins/openapi";
import { MINUTE_MS, type Policy } from "../../plugins/rate-limit/policies";
import { exactBodyOf } from "../../plugins/request-guard/body";
import type { RouteClass } from "../../plugins/route-class";
import type { ChatTurns } from "../chat/contract";
import type { Feature, WebContext } from "../feature";
import { pruneWebhookEvents } from "./events";
import { createGraphClient } from "./graph-client";
import { type WebhookMetrics, webhookMetrics } from "./metrics";
import { type OutboxSettings, OutboxWorker } from "./outbox";
import { createOutboxSeal, type OutboxSeal, outboxTamperReporter } from "./outbox-seal";
import { messageIdKeyer, sameSecret, senderHasher, verifyHubSignature } from "./whatsapp-crypto";
import { createWhatsAppMetrics, type WhatsAppMetrics } from "./whatsapp-metrics";
import {
  type ReadNotification,
  readNotification,
  WebhookAck,
  WhatsAppNotification,
} from "./whatsapp-model";

export const WHATSAPP_PATH = "/webhooks/whatsapp";
/** Meta's challenge is a number; anything longer or stranger is not echoed. */
const CHALLENGE = /^[A-Za-z0-9._~-]{1,128}$/;
/** Finished outbox rows, statuses and WhatsApp dedupe records are kept this long. */
const RETENTION_MS = 30 * DAY_MS;
/**
 * A message sent longer ago than this is ignored: a day inside the dedupe records' retention, so
 * every message accepted has its id remembered for as long as it can arrive.
 */
export const OLDEST_MESSAGE_MS = RETENTION_MS - DAY_MS;
const PRUNE_BATCH = 1000;
/** A dedupe row still `message.claimed` this long after it was written was left by a crash. */
export const CLAIM_LEASE_MS = 60_000;
/** How often a claim that could not be given back (the database locked) is tried again. */
const GIVE_BACK_RETRY_MS = 250;
const CLAIMED = "message.claimed";

/**
 * Both routes: signature-authenticated, CSRF-exempt, the body's exact bytes, the 256 KiB body limit,
 * 30/min per address.
 */
export const whatsappRouteClasses: readonly RouteClass[] = [
  {
    routes: [`GET ${WHATSAPP_PATH}`, `POST ${WHATSAPP_PATH}`],
    policy: "webhooks",
    bodyLimit: "webhooks",
    csrfExempt: true,
    // The signature is over the bytes as sent.
    exactBytes: true,
  },
];

export type Ack = typeof WebhookAck.static;

export interface IntakeOptions {
  db: AppDatabase;
  core: Pick<Core, "clock" | "logger" | "audit" | "limiter">;
  senderLimit: number;
  hashSender: (number: string) => string;
  /** What a message id is stored as (whatsapp-crypto.ts messageIdKeyer): never Meta's id itself. */
  keyMessageId: (messageId: string) => string;
  /** Seals each outbox row written, so that only rows Palisade wrote are sent. */
  outboxSeal: OutboxSeal;
  metrics: WebhookMetrics;
  whatsapp: WhatsAppMetrics;
}

/**
 * Writes a verified notification's messages into the outbox and its statuses into their table.
 * Framework-free: the route hands it what it read.
 */
/**
 * The intake's statements, each prepared once, by the first delivery that runs it (a delivery is on
 * the hot path: see bench/whatsapp.ts).
 */
function prepareIntake(db: AppDatabase) {
  const p = (name: string) => sql.placeholder(name);
  // The claim this delivery made (its id and its time), if it is still a claim.
  const thisDeliverysClaim = and(
    eq(webhookEvents.provider, "whatsapp"),
    eq(webhookEvents.eventId, p("id")),
    eq(webhookEvents.type, CLAIMED),
    eq(webhookEvents.receivedAt, p("claimedAt")),
  );
  return preparedOnUse({
    // One statement decides which delivery of a message id goes on: a new id, or a claim whose
    // delivery died before finishing it (the UPDATE branch); every other delivery gets no row.
    claim: () =>
      db
        .insert(webhookEvents)
        .values({ provider: "whatsapp", eventId: p("id"), type: CLAIMED, receivedAt: p("at") })
        .onConflictDoUpdate({
          target: [webhookEvents.provider, webhookEvents.eventId],
          set: { receivedAt: sql`excluded.received_at` },
          // Stale: older than the lease, or a time no live claim holds (the column is not sealed: a
          // claim dated ahead in the file, or as text, held every redelivery at 503 until that
          // time, or for good; probe 44a). Taking one over is safe: only the claim a delivery made
          // becomes its record (recordEvent).
          setWhere: and(
            eq(webhookEvents.type, CLAIMED),
            sql`NOT (typeof(${webhookEvents.receivedAt}) = 'integer'
              AND ${webhookEvents.receivedAt} >= ${p("staleBefore")}
              AND ${webhookEvents.receivedAt} <= ${p("aheadLimit")})`,
          ),
        })
        .returning({ id: webhookEvents.eventId })
        .prepare(),
    // What holds a message id another delivery claimed first: its claim, or its final record.
    claimOf: () =>
      db
        .select({ type: webhookEvents.type })
        .from(webhookEvents)
        .where(and(eq(webhookEvents.provider, "whatsapp"), eq(webhookEvents.eventId, p("id"))))
        .prepare(),
    // A claim given back by the delivery that made it, when that delivery failed.
    giveBack: () => db.delete(webhookEvents).where(thisDeliverysClaim).prepare(),
    // The claim becomes the record, if it is still this delivery's.
    recordEvent: () =>
      db
        .update(webhookEvents)
        .set({ type: sql`${p("type")}` })
        .where(thisDeliverysClaim)
        .returning({ id: webhookEvents.eventId })
        .prepare(),
    enqueue: () =>
      db
        .insert(whatsappOutbox)
        .values({
          messageId: p("messageId"),
          phoneNumberId: p("phoneNumberId"),
          recipient: p("recipient"),
          senderHash: p("senderHash"),
          kind: p("kind"),
          body: p("body"),
          state: "pending",
          nextAttemptAt: p("at"),
          receivedAt: p("at"),
          seal: p("seal"),
        })
        .onConflictDoNothing({ target: whatsappOutbox.messageId })
        // As text too: past 2^53 the number is rounded, and a refusal names the id given.
        .returning({
          id: whatsappOutbox.id,
          stored: sql<string>`CAST(${whatsappOutbox.id} AS TEXT)`,
        })
        .prepare(),
    recordStatus: () =>
      db
        .insert(whatsappStatuses)
        .values({
          messageId: p("id"),
          status: p("status"),
          at: p("at"),
          errorCode: p("errorCode"),
          receivedAt: p("receivedAt"),
        })
        .onConflictDoNothing({ target: [whatsappStatuses.messageId, whatsappStatuses.status] })
        .returning({ id: whatsappStatuses.messageId })
        .prepare(),
  });
}

export class WhatsAppIntake {
  private readonly senderPolicy: Policy;
  private readonly statements: ReturnType<typeof prepareIntake>;
  private readonly givingBack = new WaitingWrites(GIVE_BACK_RETRY_MS);
  /**
   * A sender over its limit is audited once per window, as every refusal that blocks nobody is:
   * anyone can message the number, and one row per message let one sender write 980 rows with
   * one delivery, each kept for the audit retention (probe 50b F4). The metric counts each.
   */
  private readonly firstLimitedInWindow: FirstInWindow;
  constructor(private readonly options: IntakeOptions) {
    this.statements = prepareIntake(options.db);
    this.firstLimitedInWindow = auditedOncePerWindow(options.core.audit, "whatsapp.sender_limited");
    this.senderPolicy = {
      id: "whatsapp_sender",
      limit: options.senderLimit,
      windowMs: MINUTE_MS,
      // Only the per-minute budget: a person typing three lines in a row is not a burst.
      burstLimit: options.senderLimit,
      failClosed: false,
    };
  }

  /**
   * Stores what the notification carries. `unfinished` counts its messages another delivery has
   * claimed and not yet recorded: the notification must be delivered again (see the module).
   */
  async accept(
    read: ReadNotification,
    request: { ip: string; requestId: string },
  ): Promise<{ ack: Ack; unfinished: number }> {
    const { db, core, metrics } = this.options;
    let unfinished = 0;
    const ack: Ack = {
      received: true,
      accepted: 0,
      duplicates: 0,
      statuses: 0,
      ignored: read.ignored,
    };
    for (let i = 0; i < read.ignored; i++) metrics.events.labels("whatsapp", "ignored").inc();

    for (const message of read.messages) {
      // Older than the dedupe records go back: its id may be forgotten, so it cannot be told
      // from a replay of signed bytes captured then (Meta's signature carries no time, and Meta
      // redelivers for 7 days at most). Answered 200 and ignored, never a second reply (probe
      // 32b F1: a 40-day-old message was answered again once its id was pruned).
      if (message.sentAt !== null && message.sentAt < core.clock.now() - OLDEST_MESSAGE_MS) {
        ack.ignored++;
        metrics.events.labels("whatsapp", "ignored").inc();
        continue;
      }
      const messageKey = this.options.keyMessageId(message.messageId);
      // A redelivery (or a concurrent copy) of a message id never reaches the limiter.
      const claimedAt = core.clock.now();
      const claim = this.claim(messageKey, claimedAt);
      if (claim === "recorded") {
        ack.duplicates++;
        metrics.events.labels("whatsapp", "duplicate").inc();
        continue;
      }
      if (claim === "running") {
        unfinished++;
        continue;
      }
      const senderHash = this.options.hashSender(message.from);
      const sender = await this.admitSender(senderHash, request.requestId);
      const limited = !sender.admitted;
      const now = core.clock.now();
      const { recordEvent, enqueue } = this.statements;
      // One transaction: the final dedupe record and the outbox row exist together or not at all.
      const store = db.$client.transaction(() => {
        const type = limited ? "message.limited" : `message.${message.kind}`;
        const event = recordEvent.all({ id: messageKey, type, claimedAt });
        if (event.length === 0) return false;
        if (limited) return true;
        const row = {
          messageId: messageKey,
          phoneNumberId: message.phoneNumberId,
          recipient: message.from,
          senderHash,
          kind: message.kind,
          body: message.text,
          reply: null,
        };
        // The outbox may still hold the id after its dedupe record was pruned (a reply that took
        // retries finished later than its message arrived): a duplicate, the record kept, not a
        // unique-index 500 that left the claim behind for every redelivery (probe 32b F2).
        const queued = enqueue.all({ ...row, at: now, seal: this.options.outboxSeal.of(row) });
        // An id past what JavaScript counts exactly (the sequence set ahead in the file) would be
        // read back rounded, and the worker, marking its row by that id, would never send it:
        // refused here, said with the reason, rather than lost without a word.
        const id = queued[0]?.id;
        if (id !== undefined && !Number.isSafeInteger(id)) {
          throw new IdSequenceError("the WhatsApp outbox's", queued[0]?.stored, "next id");
        }
        return queued.length === 1;
      });
      let inserted: boolean;
      try {
        inserted = store.immediate();
      } catch (error) {
        // Nothing of it was written, and the answer is not 200: Meta delivers it again, and that
        // delivery must find the id free, not claimed by this one, and the sender's count as it was
        // (probe 44a F2: counted twice, a sender within the limit lost messages as over it).
        this.giveBack(messageKey, claimedAt);
        sender.giveBack();
        throw error;
      }
      if (!inserted) {
        ack.duplicates++;
        metrics.events.labels("whatsapp", "duplicate").inc();
      } else if (limited) {
        ack.ignored++;
        metrics.events.labels("whatsapp", "ignored").inc();
        const policy = this.senderPolicy;
        if (this.firstLimitedInWindow("whatsapp", senderHash, now, policy.windowMs)) {
          core.audit.record({
            type: "whatsapp.sender_limited",
            outcome: "denied",
            actor: `whatsapp:${senderHash}`,
            ip: request.ip,
            route: `POST ${WHATSAPP_PATH}`,
            requestId: request.requestId,
            detail: { limit: policy.limit },
          });
        }
      } else {
        ack.accepted++;
        metrics.events.labels("whatsapp", "processed").inc();
      }
    }

    for (const status of read.statuses) {
      const result = this.statements.recordStatus.all({
        id: this.options.keyMessageId(status.messageId),
        status: status.status,
        at: status.at,
        errorCode: status.errorCode,
        receivedAt: core.clock.now(),
      });
      if (result.length === 1) {
        ack.statuses++;
        this.options.whatsapp.statuses.labels(status.status).inc();
        metrics.events.labels("whatsapp", "processed").inc();
      } else {
        ack.duplicates++;
        metrics.events.labels("whatsapp", "duplicate").inc();
      }
    }
    return { ack, unfinished };
  }

  /**
   * `won` for the one delivery that goes on with this message id (see `claim` above); `recorded`
   * when the message was stored by another; `running` while another's claim stands (or was given
   * back between the two reads: delivered again, it is claimed anew).
   */
  private claim(messageId: string, now: number): "won" | "recorded" | "running" {
    const rows = this.statements.claim.all({
      id: messageId,
      at: now,
      staleBefore: now - CLAIM_LEASE_MS,
      aheadLimit: now + CLAIM_LEASE_MS,
    });
    if (rows.length === 1) return "won";
    const held = this.statements.claimOf.get({ id: messageId });
    return held === undefined || held.type === CLAIMED ? "running" : "recorded";
  }

  /**
   * Deletes this delivery's claim, if it is still there and still this delivery's. The database may
   * be what failed (locked): then it waits for the lock (db/waiting-writes), and stops trying once
   * the claim's lease has ended (a redelivery takes the claim over then anyway).
   */
  private giveBack(messageId: string, claimedAt: number): void {
    const { core } = this.options;
    this.givingBack.run(
      `${messageId}\u0000${claimedAt}`,
      () => {
        if (core.clock.now() - claimedAt >= CLAIM_LEASE_MS) return;
        this.statements.giveBack.run({ id: messageId, claimedAt });
      },
      {
        waiting: () => {},
        written: () => {},
        failed: (error) =>
          core.logger.warn(
            { err: error },
            "a WhatsApp message's claim could not be given back; a redelivery takes it over once its lease ends",
          ),
      },
    );
  }

  /**
   * At a stop: the claims still waiting for another connection's lock to be given back are tried
   * until it goes, their lease ends or STOP_LOCK_WAIT_MS passes (probe 44b F1). One left is taken
   * over by a redelivery once its lease ends, as a crashed delivery's is.
   */
  async stop(): Promise<void> {
    await this.givingBack.drain(STOP_LOCK_WAIT_MS);
    this.reportUndone("the database stayed locked");
  }

  /** Logs the claims still waiting for the lock, as the process stops (`why`). */
  reportUndone(why: string): void {
    const claims = this.givingBack.pending().length;
    if (claims > 0) {
      // Said, as the README says each write left undone is (probe 45a F2).
      this.options.core.logger.warn(
        { claims },
        `WhatsApp message claims not given back before the stop (${why}): their redeliveries are answered 503 until each claim's minute ends`,
      );
    }
  }

  /**
   * Counts the message against its sender's budget; a failing store lets it through. `giveBack`
   * uncounts it, for a message that was not stored after all.
   */
  private async admitSender(
    senderHash: string,
    requestId: string,
  ): Promise<{ admitted: boolean; giveBack(): void }> {
    const { core } = this.options;
    const policy = this.senderPolicy;
    const key = `whatsapp:${senderHash}`;
    const nothing = () => {};
    try {
      const [outcome] = await core.limiter.check([{ policy, key, now: core.clock.now() }]);
      if (outcome === undefined) return { admitted: true, giveBack: nothing };
      if (!outcome.admitted) return { admitted: false, giveBack: nothing };
      const { windowStart, burstWindowStart } = outcome;
      return {
        admitted: true,
        giveBack: () =>
          core.limiter.giveBack([{ policy, key, windowStart, burstWindowStart, count: 1 }]),
      };
    } catch (error) {
      core.logger.error({ err: error, requestId }, "whatsapp sender limit unavailable; admitting");
      return { admitted: true, giveBack: nothing };
    }
  }

  /**
   * Deletes finished rows, statuses and WhatsApp dedupe records past retention; bounded in rows, and
   * the outbox's in text too (DELETE_PART_BYTES).
   */
  prune(now: number): void {
    const { db, core } = this.options;
    const cutoff = now - RETENTION_MS;
    const o = whatsappOutbox;
    // A state Palisade never writes (the column is not sealed) is no reply owed and never finished:
    // given up, its number and text cleared, so it is pruned like any other (probe 29c F2: such a
    // row kept the number in clear for good). Not resealed: its seal was not checked.
    const strays = db
      .update(o)
      .set({
        state: "failed",
        recipient: null,
        body: null,
        leaseUntil: null,
        leaseOwner: null,
        lastError: "its state was written into the database file",
        finishedAt: now,
      })
      .where(
        inArray(
          o.id,
          db.select({ id: o.id }).from(o).where(outboxStateUnwritten(o.state)).limit(PRUNE_BATCH),
        ),
      )
      // Named as the file holds them: an id past 2^53 read as a number is another row's (58e F2).
      .returning({ id: sql<string>`CAST(${o.id} AS TEXT)` })
      .all();
    if (strays.length > 0) {
      core.logger.warn(
        { outboxIds: strays.map((row) => row.id) },
        "whatsapp outbox rows in a state Palisade never writes were given up",
      );
    }
    // Finished past retention, by finish time; and any with a finish time no worker writes (none,
    // a text: the column is not sealed), or the row would keep its number for good (probe 29e F3).
    // Two selections, each on its own index: one with an OR read the whole outbox.
    const pastRetention = db
      .select({ id: o.id })
      .from(o)
      .where(and(lt(o.finishedAt, cutoff), inArray(o.state, ["sent", "failed"])))
      .orderBy(o.finishedAt)
      .limit(PRUNE_BATCH);
    const unwrittenFinish = db
      .select({ id: o.id })
      .from(o)
      .where(outboxFinishUnwritten(o.state, o.finishedAt))
      .limit(PRUNE_BATCH);
    const finished = sql`SELECT id FROM (${pastRetention}) UNION ALL SELECT id FROM (${unwrittenFinish})`;
    // A finished row keeps its reply, up to the longest a chat turn stores (db/text-bounded).
    const withinBytes = idsWithinBytes(
      o,
      sql`coalesce(octet_length(reply), 0) + coalesce(octet_length(body), 0)`,
      finished,
    );
    db.delete(o).where(sql`${o.id} IN (${withinBytes})`).run();
    // Each status row by its own rowid: a message has a row per status, and selecting by message
    // id took a message's recent statuses with its expired one (probe 27e F2).
    const statusRow = sql<number>`rowid`;
    const statuses = db
      .select({ rowid: statusRow })
      .from(whatsappStatuses)
      .where(lt(whatsappStatuses.receivedAt, cutoff))
      .limit(PRUNE_BATCH);
    db.delete(whatsappStatuses).where(inArray(statusRow, statuses)).run();
    pruneWebhookEvents(db, "whatsapp", cutoff);
  }
}

export interface WhatsAppModuleOptions {
  auth: WebContext["auth"];
  config: Core["config"]["whatsapp"];
  intake: WhatsAppIntake;
  core: Pick<Core, "audit" | "clock">;
  metrics: WebhookMetrics;
  /** Called after a delivery's rows are committed: the worker looks for them at once. */
  onAccepted: () => void;
}

const checkNotification = TypeCompiler.Compile(WhatsAppNotification);

/** The parameter Meta sends, from the raw query (names with dots; a repeated one is refused). */
function single(params: URLSearchParams, name: string): string | null {
  const values = params.getAll(name);
  return values.length === 1 ? values[0]! : null;
}

export function whatsappModule(options: WhatsAppModuleOptions) {
  const { auth, config, intake, core, metrics } = options;
  const tags = ["webhooks"];
  const firstInWindow = auditedOncePerWindow(core.audit, "webhook.signature_failed");
  return new Elysia({ name: "palisade.module.whatsapp" })
    .use(auth)
    .get(
      WHATSAPP_PATH,
      ({ request, set }) => {
        const params = new URL(request.url).searchParams;
        const mode = single(params, "hub.mode");
        const token = single(params, "hub.verify_token");
        const challenge = single(params, "hub.challenge");
        const expected = config.verifyToken;
        // The comparison runs whatever else is wrong, so its time says nothing about the token.
        const tokenMatches = sameSecret(token ?? "", expected ?? "");
        if (
          expected === null ||
          mode !== "subscribe" ||
          token === null ||
          !tokenMatches ||
          challenge === null ||
          !CHALLENGE.test(challenge)
        ) {
          throw new AppError("FORBIDDEN", "The subscription could not be verified.");
        }
        set.headers["content-type"] = "text/plain; charset=utf-8";
        return challenge;
      },
      {
        public: true,
        response: {
          200: t.String({ description: "`hub.challenge`, echoed as text/plain" }),
          ...problemResponses(403),
        },
        detail: {
          tags,
          summary:
            "WhatsApp subscription check (Meta sends hub.mode, hub.verify_token, hub.challenge)",
          // Read from the raw query: the names hold dots, and one sent twice is refused.
          [READ_PARAMETERS_KEY]: [
            {
              name: "hub.mode",
              in: "query",
              required: true,
              description: "`subscribe`",
              schema: { type: "string", enum: ["subscribe"] },
            },
            {
              name: "hub.verify_token",
              in: "query",
              required: true,
              description: "WHATSAPP_VERIFY_TOKEN, as set in the Meta app's webhook",
              schema: { type: "string" },
            },
            {
              name: "hub.challenge",
              in: "query",
              required: true,
              description: "echoed as text/plain when the token matches",
              schema: { type: "string", pattern: "^[A-Za-z0-9._~-]{1,128}$" },
            },
          ] satisfies ReadParameter[],
        },
      },
    )
    .post(
      WHATSAPP_PATH,
      async (context) => {
        const { body, request, client, requestId } = context;
        if (config.appSecret === null) {
          throw new AppError(
            "NOT_CONFIGURED",
            "WhatsApp is not configured (WHATSAPP_APP_SECRET is not set).",
          );
        }
        // The request guard keeps the exact bytes and text it read (exactBodyOf), parsed here once
        // they verify; `body` (the text) is named so that Elysia reads the body at all.
        void body;
        const exact = exactBodyOf(context);
        const check = verifyHubSignature(request.headers.get("x-hub-signature-256"), exact.bytes, {
          current: config.appSecret,
          previous: config.previousAppSecret,
        });
        if (!check.valid) {
          metrics.signatureFailures.labels("whatsapp").inc();
          // Audited once per address and minute (audit/once-per-window); the metric counts each.
          const now = core.clock.now();
          const audited = firstInWindow("whatsapp", client.key, now, REFUSAL_AUDIT_WINDOW_MS);
          if (audited)
            core.audit.record({
              type: "webhook.signature_failed",
              outcome: "denied",
              ip: client.ip,
              route: `POST ${WHATSAPP_PATH}`,
              requestId,
              detail: { provider: "whatsapp", reason: check.reason },
            });
          throw new AppError("BAD_SIGNATURE", "X-Hub-Signature-256 did not verify.");
        }
        let notification: unknown;
        try {
          notification = JSON.parse(exact.text);
        } catch {
          // Verified, so Meta's (or a proxy's) broken body: counted failed, as a wrong shape is.
          metrics.events.labels("whatsapp", "failed").inc();
          throw new AppError("MALFORMED_BODY", "The request body is not valid JSON.");
        }
        if (!checkNotification.Check(notification)) {
          metrics.events.labels("whatsapp", "failed").inc();
          throw new AppError("BAD_REQUEST", "Not a WhatsApp Business Account notification.");
        }
        if (notification.object !== "whatsapp_business_account") {
          metrics.events.labels("whatsapp", "ignored").inc();
          return { received: true as const, accepted: 0, duplicates: 0, statuses: 0, ignored: 1 };
        }
        const read = readNotification(notification, Date.now());
        const { ack, unfinished } = await intake.accept(read, { ip: client.ip, requestId });
        if (ack.accepted > 0) options.onAccepted();
        if (unfinished > 0) {
          // The rest of it is stored (its ids are duplicates when Meta delivers it again).
          throw new AppError(
            "SERVICE_UNAVAILABLE",
            "Another delivery of a message in this notification is still being stored; deliver it again.",
            undefined,
            { "retry-after": "1" },
          );
        }
        return ack;
      },
      {
        public: true,
        response: { 200: WebhookAck, ...problemResponses(400, 401, 501, 503) },
        detail: {
          tags,
          summary:
            "WhatsApp notifications (messages and statuses), signed with X-Hub-Signature-256",
          // Checked over the raw body, before it is parsed.
          [READ_PARAMETERS_KEY]: [
            {
              name: "X-Hub-Signature-256",
              in: "header",
              required: true,
              description:
                "`sha256=` and the HMAC-SHA256 of the raw body with WHATSAPP_APP_SECRET, in hex",
              schema: { type: "string", pattern: "^sha256=[0-9a-fA-F]{64}$" },
            },
          ] satisfies ReadParameter[],
        },
      },
    );
}

export interface WhatsAppWebhookOptions {
  /** The chat turns that write the replies (the chat feature's). */
  chat: ChatTurns;
  /** The Graph API is reached with this (tests: the real fetch against a local server). */
  fetch?: typeof fetch;
  /** Worker timings; the defaults suit production. */
  outbox?: Partial<OutboxSettings>;
}

export interface WhatsAppWebhook extends Feature {
  intake: WhatsAppIntake;
  worker: OutboxWorker;
  start(): void;
  stop(): Promise<void>;
}

export function whatsappWebhook(core: Core, options: WhatsAppWebhookOptions): WhatsAppWebhook {
  const { config, db, logger } = core;
  const metrics = webhookMetrics(core.registry);
  const whatsapp = createWhatsAppMetrics(core.registry, db.$client);
  const outboxSeal = createOutboxSeal(config.audit.secretKey);
  const keyMessageId = messageIdKeyer(config.audit.secretKey);
  const intake = new WhatsAppIntake({
    db,
    core,
    senderLimit: config.rateLimit.whatsappSender,
    hashSender: senderHasher(config.audit.secretKey),
    keyMessageId,
    outboxSeal,
    metrics,
    whatsapp,
  });
  const worker = new OutboxWorker({
    db,
    seal: outboxSeal,
    keyMessageId,
    reportTampered: outboxTamperReporter({ logger, audit: core.audit }),
    clock: core.clock,
    logger,
    audit: core.audit,
    chat: options.chat,
    graph: createGraphClient({
      apiUrl: config.whatsapp.apiUrl,
      accessToken: config.whatsapp.accessToken ?? "",
      fetch: options.fetch,
      timeoutMs: options.outbox?.sendTimeoutMs,
      otherSecrets: config.secretValues,
    }),
    metrics: whatsapp,
    settings: options.outbox,
  });
  const configured = config.whatsapp.appSecret !== null && config.whatsapp.accessToken !== null;

  return {
    name: "whatsapp",
    intake,
    worker,
    routeClasses: whatsappRouteClasses,
    routes: ({ auth }) =>
      whatsappModule({
        auth,
        config: config.whatsapp,
        intake,
        core,
        metrics,
        onAccepted: () => worker.kick(),
      }),
    maintenance: (now) => {
      // Without a worker nothing else gives up what can no longer be answered (probe 81a F3).
      if (!configured) worker.giveUpOverdue(now);
      intake.prune(now);
    },
    start() {
      if (configured) worker.start();
      else if (config.whatsapp.appSecret !== null) {
        logger.warn(
          "WHATSAPP_APP_SECRET is set but WHATSAPP_ACCESS_TOKEN is not: messages are accepted and no reply is sent; each is given up 15 minutes after it arrived (set the token within that time for it to be answered)",
        );
      }
    },
    stop: async () => {
      await Promise.all([worker.stop(), intake.stop()]);
    },
    reportUndone: (why) => intake.reportUndone(why),
    close: () => worker.close(),
  };
}

/** The WhatsApp webhook as a feature of its own (until it joins the webhooks feature). */
export function whatsappFeature(core: Core, options: WhatsAppWebhookOptions): Feature {
  return whatsappWebhook(core, options);
}
