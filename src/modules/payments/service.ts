/**
 * @module
 * Payments: creating intents exactly once per idempotency key, reading them, refunding them.
 *
 * **Idempotency.** `POST /api/payments/intents` requires an `Idempotency-Key`. A key belongs to its
 * owner (`user:<id>` for a user and the API keys acting for that user, `key:<id>` for an ownerless
 * key): the same key from another owner is another key, and never replays someone else's result.
 * The request claims the key by inserting a `pending` row in a BEGIN IMMEDIATE transaction, which
 * one request of many (in any process on the file) wins; only the winner calls Stripe. The key
 * Stripe sees is derived from the owner and the key (a SHA-256), so Stripe's own deduplication is
 * scoped the same way and a retry after a crash is replayed by Stripe rather than charged twice.
 * - same key, same body (its canonical JSON's SHA-256) after the first finished: the first
 *   response, status and body, with no Stripe call;
 * - same key, another body: 409 CONFLICT;
 * - same key while the first is still with Stripe: the request waits for it (polling the row, up
 *   to `inProgressWaitMs`, 10 s by default) and answers with its result; past that, 409 CONFLICT
 *   ("in progress", `Retry-After: 1`); at once, with the seconds its lease has left, when this
 *   process made the first's intent but could not record it;
 * - the first failed (Stripe unreachable, refused the request): the claim is deleted, so the
 *   client may retry with the same key; a waiting request then claims it itself.
 * A claim older than `CLAIM_LEASE_MS` (a process killed while Stripe answered) may be taken over;
 * Stripe's key makes the takeover's call a replay. Keys are kept 24 hours, as Stripe keeps its own.
 *
 * **Refunds** (admins): one refund of a payment at a time (the row is marked while Stripe works on
 * it), at most the amount not yet refunded, with a Stripe idempotency key derived from the payment,
 * the refunded total before it and the amount, so a retried refund is not made twice.
 */
import { and, eq, gt, lte, sql } from "drizzle-orm";
import { type Clock, DAY_MS } from "../../clock";
import { isDatabaseBusy } from "../../db/busy";
import type { AppDatabase } from "../../db/client";
import { spentIdsIn } from "../../db/id-sequence";
import { auditEvents, paymentIdempotencyKeys, payments } from "../../db/schema";
import { WaitingWrites } from "../../db/waiting-writes";
import type { Logger } from "../../logging/logger";
import { type AuditLog, recordDone } from "../../plugins/audit/log";
import { RecentEntries } from "../../recent-entries";
import {
  canonicalJson,
  type PaymentLedger,
  type PaymentRow,
  type PaymentView,
  viewOf,
} from "./ledger";
import type { PaymentMetrics } from "./metrics";
import {
  reportedIdempotencyKey,
  SEALED_PAYMENT_COLUMNS,
  type SealedIdempotencyKey,
  type SealedPayment,
} from "./seal";
import {
  type CreatedIntent,
  type CreatedRefund,
  type GatewayFailure,
  type IntentRequest,
  type PaymentGateway,
  REFUNDS_NOT_READ_WHOLE,
} from "./stripe-client";
import {
  isKeyedRefund,
  keyedRefundKey,
  MADE_KEPT_MS,
  UNLISTED_KEPT_MS,
  type UndecidedRefund,
} from "./undecided-refund";

export const CLAIM_LEASE_MS = 120_000;
/** PAYMENT_DAILY_INTENTS' default. */
export const DEFAULT_DAILY_INTENTS = 200;

/**
 * Whether a claim (of an Idempotency-Key, of a refund) stamped at `startedAt` still runs at `now`:
 * within its lease. Neither time is sealed. A stamp the file dates more than a lease ahead is no
 * claim any process made (processes sharing a file share its host's clock) and is taken over at
 * once, as the WhatsApp intake takes over such a claim: a refund claim dated ten years ahead
 * answered every refund of its payment 409 for good (probe 50b F2). A stamp that is no number is
 * no claim either.
 */
export function claimRuns(startedAt: unknown, now: number): boolean {
  return (
    typeof startedAt === "number" &&
    startedAt + CLAIM_LEASE_MS > now &&
    startedAt - CLAIM_LEASE_MS <= now
  );
}
/** The daily cap's refusal, the next intent allowed at `until`: never more than a day ahead. */
function overDailyUntil(until: number, now: number) {
  return {
    kind: "over_daily" as const,
    retryAfterSeconds: Math.max(1, Math.ceil(Math.min(DAY_MS, until - now) / 1000)),
  };
}

export const IDEMPOTENCY_RETENTION_MS = DAY_MS;
/**
 * Rows past the cap the daily count reads before it stops: rows written into the file beyond them
 * are not read (probe 85d F1: 20,000 held each of the owner's requests, and the write lock, 5.8 s).
 */
const DAILY_CAP_SLACK = 256;
/** Owners at their daily cap a process remembers (~200 B each). */
const OWNERS_AT_CAP_REMEMBERED = 10_000;

const DEFAULT_IN_PROGRESS_WAIT_MS = 10_000;
const POLL_MS = 20;
/**
 * How often a write that follows Stripe's answer (a refund's record, a claim given back) is tried
 * again while the database is locked.
 */
export const RECORD_RETRY_MS = 200;
const PRUNE_BATCH = 1000;

/** What an intent request answers with (the route's 201 body). */
export type IntentResponse = CreatedIntent;

/** Who acts, for the audit log. */
export interface ActingRequest {
  actor: string;
  ip: string | null;
  route: string;
  requestId: string;
  /**
   * Whether the credential that asked still stands, asked in the transaction that claims a refund
   * or an intent's Idempotency-Key: a refund or an intent asked by a key revoked (or a session
   * logged out) after the auth stage let the request by is not made (probes 38c F1, 39b).
   */
  stands?: () => boolean;
}

export type IntentOutcome =
  | { kind: "created"; response: IntentResponse; replayed: boolean }
  | { kind: "key_reused" }
  /**
   * The key made an intent whose payment the ledger no longer holds as Palisade wrote it (changed
   * or deleted in the file): not replayed, since the payment is treated as absent everywhere else
   * and the webhook would ignore what is paid on it (probe 89e F2).
   */
  | { kind: "payment_gone" }
  /**
   * Another request holds the key: still with Stripe (`retryAfterSeconds` absent: retry shortly),
   * or — known to this process — its intent made but unrecorded, so nothing finishes it before its
   * lease ends, in `retryAfterSeconds`.
   */
  | { kind: "in_progress"; retryAfterSeconds?: number }
  /**
   * Stripe made the intent, but the ledger could not record it (the file locked past the wait, or
   * failing): the key's claim is taken over (and Stripe replays the intent) once its lease ends, in
   * `retryAfterSeconds`.
   */
  | { kind: "unrecorded"; retryAfterSeconds: number; reason: "busy" | "failed" }
  /** The owner's account was erased meanwhile (its credential still accepted for a second). */
  | { kind: "owner_gone" }
  /** The credential that asked was revoked or logged out meanwhile (ActingRequest.stands). */
  | { kind: "actor_gone" }
  /** The owner made PAYMENT_DAILY_INTENTS intents in the last 24 hours; the next may be made then. */
  | { kind: "over_daily"; retryAfterSeconds: number }
  | GatewayFailure;

export type RefundOutcome =
  | {
      kind: "refunded";
      refund: { id: string; amount: number; status: string };
      payment: PaymentView;
      /** The refund asked before under this request's Idempotency-Key. */
      replayed?: boolean;
    }
  /** The Idempotency-Key was used for a refund of another amount of the payment. */
  | { kind: "key_reused" }
  /**
   * A refund of another amount whose answer was lost was found made by Stripe first: recorded and
   * audited, and this refund not asked for (the admin asks again, knowing of it).
   */
  | {
      kind: "earlier_refund_made";
      refund: { id: string; amount: number; status: string };
      payment: PaymentView;
    }
  /**
   * An earlier refund of the payment whose answer was lost is not among Stripe's refunds, and may
   * still be in the making (UNLISTED_KEPT_MS): no other refund starts until Stripe lists it or
   * that time has passed.
   */
  | { kind: "earlier_refund_undecided"; retryAfterSeconds: number }
  | { kind: "not_found" }
  | { kind: "not_refundable"; status: string }
  | { kind: "too_much"; remaining: number }
  | { kind: "in_progress" }
  /** The credential that asked was revoked or logged out meanwhile (ActingRequest.stands). */
  | { kind: "actor_gone" }
  | GatewayFailure;

export interface PaymentServiceOptions {
  db: AppDatabase;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  ledger: PaymentLedger;
  metrics: PaymentMetrics;
  /** Null when STRIPE_SECRET_KEY is unset: every route answers 501 NOT_CONFIGURED. */
  gateway: PaymentGateway | null;
  inProgressWaitMs?: number;
  /**
   * Whether an owner is still there to pay for (a user not erased); asked inside the claim's
   * transaction. Absent: every owner is.
   */
  ownerStands?: (owner: string) => boolean;
  /** New intents one owner may make in any 24 hours (PAYMENT_DAILY_INTENTS; 0: no bound). */
  dailyIntents?: number;
}

/** The SHA-256 of the request's canonical JSON: keys sorted at every level. */
export function requestHash(request: IntentRequest): string {
  return new Bun.CryptoHasher("sha256").update(canonicalJson(request)).digest("hex");
}

/** The idempotency key Stripe sees: scoped to the owner, so owners never share Stripe's replays. */
export function stripeIdempotencyKey(owner: string, key: string): string {
  return `palisade_${new Bun.CryptoHasher("sha256").update(`${owner}\n${key}`).digest("hex")}`;
}

/** A refund claimed: what it asks for, and the payment's row as the claim read it. */
interface RefundStart {
  kind: "start";
  amount: number;
  refundedBefore: number;
  currency: string;
  row: PaymentRow;
  /** Its first Stripe idempotency key, as the payment's undecided refunds name it. */
  key: string;
  /** Its claim of the payment: the `refund_started_at` it holds (renewed after a settle). */
  claimedAt: number;
}

type Claim =
  /** This request holds the key, from `claimedAt` (its lease's start, which a takeover moves). */
  | { kind: "claimed"; claimedAt: number }
  | { kind: "done"; response: IntentResponse }
  | { kind: "pending" }
  | { kind: "key_reused" }
  | { kind: "owner_gone" }
  | { kind: "actor_gone" }
  | { kind: "over_daily"; retryAfterSeconds: number };

/** An owner's Idempotency-Key as one map key (JSON: no owner and key pair spells another's). */
function unrecordedKey(owner: string, key: string): string {
  return JSON.stringify([owner, key]);
}

/** How many refunds Stripe refused (`failed`, `canceled`) one refund request walks past. */
export const MAX_REFUND_ATTEMPTS = 10;
/**
 * How long after its start a request still starts a Stripe call to walk on (past a refusal, a
 * kept server error, or to read the refunds made under a key): the next call may take ~65 s (20 s,
 * two retries), and all of it must end inside the claim (CLAIM_LEASE_MS), or another refund of the
 * payment could start beside it (probe 33b F3). Reading the refunds after a kept server error
 * started past it, a slow list outlived the claim (probe 59d F2).
 */
export const WALK_MS = 30_000;

/**
 * A walk past server errors Stripe keeps, stopped by WALK_MS before its next call: nothing is
 * decided, and a retry goes on from where it stopped (503, Retry-After).
 */
const OUT_OF_TIME: GatewayFailure = { ok: false, kind: "unavailable", reason: "walk out of time" };

/** How many keys one intent request walks past server errors Stripe keeps for them. */
export const MAX_INTENT_KEYS = 10;

/**
 * The intent under the Stripe key derived from the owner's Idempotency-Key, or, where Stripe keeps
 * a server error for that key, under the next key derived from it, and so on. Stripe saves a 500's
 * answer under its idempotency key (it began the request) and answers it again for 24 hours, so a
 * retry with the same Idempotency-Key, which the 503 asks for, was a 503 for a day (probe 59a F1).
 * The keys are the same, in the same order, on every retry and in every process, so an answer lost
 * on the way is still that intent again; a server error that is not a replay is this request's
 * answer (503), and the next retry walks past it. No key is asked past WALK_MS into the request,
 * so the walk ends inside the key's claim. What a 500 leaves undecided: an intent Stripe may
 * have made under a key walked past, whose client secret no one was given, so it is never confirmed
 * nor charged (Stripe lists it as incomplete).
 */
async function intentPastKeptErrors(
  gateway: PaymentGateway,
  request: IntentRequest,
  first: string,
  clock: Clock,
): Promise<Awaited<ReturnType<PaymentGateway["createIntent"]>>> {
  const walkUntil = clock.now() + WALK_MS;
  for (let walked = 0; ; walked++) {
    const result = await gateway.createIntent(request, walked === 0 ? first : `${first}_${walked}`);
    if (result.ok || result.kind !== "unavailable" || !result.keptByStripe) return result;
    if (walked === MAX_INTENT_KEYS - 1) return result;
    if (clock.now() >= walkUntil) return OUT_OF_TIME;
  }
}

/** A refund's first Stripe idempotency key: the payment, its refunded total before, the amount. */
function firstRefundKey(id: string, refundedBefore: number, amount: number): string {
  return `palisade_refund_${id}_${refundedBefore}_${amount}`;
}

/**
 * Whether `entry`, found made, is the answer to this request: with an Idempotency-Key, the refund
 * asked under it; without one, a refund asked without one that this is a retry of (isRetryOf).
 */
function answers(
  entry: UndecidedRefund,
  keyed: string | null,
  amount: number | undefined,
  row: PaymentRow,
): boolean {
  if (keyed !== null) return entry.key === keyed;
  return !isKeyedRefund(entry.key) && isRetryOf(entry, amount, row);
}

/**
 * Whether a refund asked of `row` for `amount` (the rest when undefined) is a retry of `entry`: of
 * its amount, or, for the rest, of what was the rest when it started (probe 61a F2: once the
 * refund of the rest was recorded, the rest was 0, and its retry was refused).
 */
function isRetryOf(entry: UndecidedRefund, amount: number | undefined, row: PaymentRow): boolean {
  if (amount !== undefined) return entry.amount === amount;
  // Not any refund equal to the rest now: one of 1000 found made, with the rest now 1000, answered
  // a new refund of the rest with it, and nothing was made (probe 61c F3).
  return entry.before + entry.amount === row.amount;
}

/** How many refused keys this process remembers where to walk on from (refundPastFailures). */
const REFUND_WALKS_KEPT = 1_000;

/**
 * A refund of `amount` from the payment's refunded total `refundedBefore`, under a Stripe
 * idempotency key derived from them, so a retry after an answer lost on the way (a timeout, a
 * stop) is that refund again, never a second one. Stripe answers a key it has seen with its first
 * answer for 24 hours, so a refund it refused (`failed`, `canceled`) would be that refusal again
 * on every retry (probe 32b): a refused answer replayed moves on to the key derived from that
 * refused refund's id, which is again the same on every retry. A refusal that is not a replay is
 * this request's answer. Where a walk stopped (out of attempts or time) is remembered by the
 * process, so the next retry walks on from there rather than replaying the same refusals again
 * (probe 33c F1); another process, or this one restarted, walks from the first key, as every key
 * it passes is a refusal Stripe keeps.
 */
async function refundPastFailures(
  gateway: PaymentGateway,
  id: string,
  first: string,
  { amount, currency }: { amount: number; currency: string },
  clock: Clock,
  walks: Map<string, string>,
): Promise<{ result: Awaited<ReturnType<PaymentGateway["refund"]>>; key: string }> {
  const walkUntil = clock.now() + WALK_MS;
  const remember = (place: string) => {
    if (walks.size >= REFUND_WALKS_KEPT && !walks.has(first)) walks.clear();
    walks.set(first, place);
  };
  let key = walks.get(first) ?? first;
  const asked = (result: Awaited<ReturnType<PaymentGateway["refund"]>>, askedKey = key) => ({
    result,
    key: askedKey,
  });
  for (let attempt = 1; ; attempt++) {
    const answered = await gateway.refund(id, amount, currency, key);
    // A kept server error answered past the walk's time: the retry reads the refunds.
    const kept = !answered.ok && answered.kind === "unavailable" && answered.keptByStripe;
    if (kept && clock.now() >= walkUntil) return asked(OUT_OF_TIME);
    const result = answered.ok
      ? answered
      : await pastKeptError(gateway, id, { amount, currency }, key, answered);
    if (result === "not made") {
      // Stripe keeps a server error for this key and made no refund under it: the next key, in
      // this request or, out of attempts or time, in the next retry.
      const notMade = key;
      key = `${key}_after_error`;
      if (attempt === MAX_REFUND_ATTEMPTS || clock.now() >= walkUntil) {
        remember(key);
        return asked(OUT_OF_TIME, notMade);
      }
      continue;
    }
    // A failed call leaves the walk where it was; a refund made, or pending, ends it.
    if (!result.ok) return asked(result);
    if (result.status !== "failed" && result.status !== "canceled") {
      walks.delete(first);
      return asked(result);
    }
    // This refusal is the answer when it is new, or when out of attempts or time: the next
    // retry starts at its key, and walks on past it.
    if (!result.replayed || attempt === MAX_REFUND_ATTEMPTS || clock.now() >= walkUntil) {
      remember(key);
      return asked(result);
    }
    key = `${first}_after_${result.id}`;
  }
}

/**
 * What a refund's failed call means. A server error Stripe keeps for the key (it began the
 * request, saved its 500 and answers it again for 24 hours) says nothing of whether the refund was
 * made, so the payment's refunds are read for the one made under that key (each carries its key in
 * its metadata): made, it is this refund's answer; not made, the walk moves on to the next key
 * ("not made"). A retry was otherwise a 502 for a day (probe 59a F1). A refund list that cannot be
 * read leaves the failure as it was. Any other failure is the answer.
 */
async function pastKeptError(
  gateway: PaymentGateway,
  id: string,
  { amount, currency }: { amount: number; currency: string },
  key: string,
  failure: GatewayFailure,
): Promise<Awaited<ReturnType<PaymentGateway["refund"]>> | "not made"> {
  if (failure.kind !== "unavailable" || !failure.keptByStripe) return failure;
  const found = await gateway.refundMadeUnder(id, amount, currency, key);
  // A read that failed for now (Stripe down, a 429) is retried shortly: the refund is left
  // undecided, and the retry reads them again (probe 60a F-LIST: it was the 24-hour answer).
  if (!found.ok && found.kind === "unavailable" && found.reason !== REFUNDS_NOT_READ_WHOLE) {
    return { ok: false, kind: "unavailable", reason: found.reason };
  }
  // Read whole, the refund listed under the key is not this one (another amount, currency or
  // payment): no retry makes it so, and every refund of the payment waits for an operator, as
  // settleUndecided then finds it (probe 92d F3: this request said "unknown").
  if (!found.ok && found.kind === "bad_response") {
    return { ok: false, kind: "bad_response", reason: UNDECIDED_NOT_THAT_REFUND };
  }
  if (!found.ok) return failure;
  return found.refund === null ? "not made" : { ok: true, ...found.refund };
}

/** Why a new intent's answer is not trusted: it names a payment the ledger holds otherwise. */
export const INTENT_OF_ANOTHER_PAYMENT = "payment intent of another payment";

/** Refund ids a process remembers having audited (auditedHere): far more than a lock's worth. */
const REFUNDS_AUDITED_REMEMBERED = 10_000;

/** An answer without a refund, as an audit row names it: its kind, never Stripe's text. */
function reasonOf(outcome: RefundOutcome): string {
  if ("ok" in outcome && outcome.reason === UNDECIDED_NOT_THAT_REFUND) {
    return "undecided_not_that_refund";
  }
  return outcome.kind;
}

/** Why a refund is refused while an undecided one's key lists another refund (settleUndecided). */
export const UNDECIDED_NOT_THAT_REFUND = "undecided refund not that refund";

export class PaymentService {
  readonly configured: boolean;
  private readonly db: AppDatabase;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly audit: AuditLog;
  private readonly ledger: PaymentLedger;
  private readonly metrics: PaymentMetrics;
  private readonly gateway: PaymentGateway | null;
  private readonly inProgressWaitMs: number;
  private readonly ownerStands: (owner: string) => boolean;
  private readonly dailyIntents: number;
  /** Per payment, a refund's ledger write that waits for the database lock (writeOrWait). */
  private readonly refundWrites = new WaitingWrites(RECORD_RETRY_MS);
  /**
   * The requests whose refund this process has audited as asked for, until they are answered:
   * whether Stripe was asked to make it (`sent`), and the refunds audited as made in the request
   * (`payment.refund`), so that every `requested` row ends in a row saying what came of it.
   */
  private readonly refundTrails = new WeakMap<
    ActingRequest,
    { sent: boolean; audited: Set<string> }
  >();
  /** Per owner's key (unrecordedKey), the give-back of a failed intent's claim that waits for it. */
  private readonly releases = new WaitingWrites(RECORD_RETRY_MS);
  /**
   * Keys whose intent this process made but could not record, and when their 503 said to retry
   * (their claim's lease has ended by then): a retry before that is told so at once instead of
   * waiting for a claim nothing will finish. Entries end with their lease (`unrecordedRetryAt`).
   */
  private readonly unrecorded = new Map<string, number>();
  /**
   * Owners this process found at their daily cap, by what their rows looked like then, and until
   * when: an owner asking again while nothing changed is answered without its rows checked again
   * (probe 85d F2: each refusal read and checked the cap's rows whole, 175–416 ms at 1,000).
   */
  private readonly atDailyCap = new RecentEntries<{ rows: string; until: number }>(
    OWNERS_AT_CAP_REMEMBERED,
  );
  /**
   * Refunds this process has audited (`payment.refund`), written or still queued: a row queued
   * while the database is locked is not in the table yet, and a retry answered meanwhile audited
   * the refund a second time (probe 94c F1). Another process's queued row is not seen here.
   */
  private readonly auditedHere = new RecentEntries<true>(REFUNDS_AUDITED_REMEMBERED);
  /** Per refund's first key, the key its walk past refusals stopped at (refundPastFailures). */
  private readonly refundWalks = new Map<string, string>();

  constructor(options: PaymentServiceOptions) {
    this.db = options.db;
    this.clock = options.clock;
    this.logger = options.logger;
    this.audit = options.audit;
    this.ledger = options.ledger;
    this.metrics = options.metrics;
    this.gateway = options.gateway;
    this.configured = options.gateway !== null;
    this.inProgressWaitMs = options.inProgressWaitMs ?? DEFAULT_IN_PROGRESS_WAIT_MS;
    this.ownerStands = options.ownerStands ?? (() => true);
    this.dailyIntents = options.dailyIntents ?? DEFAULT_DAILY_INTENTS;
  }

  /** Claims `key` for `owner`, or says what holds it; one BEGIN IMMEDIATE transaction. */
  private claim(owner: string, key: string, hash: string, stands?: () => boolean): Claim {
    const now = this.clock.now();
    return this.db.transaction(
      (tx) => {
        // An owner erased meanwhile — its credential still accepted for up to a second by a
        // process not yet told — claims nothing: the key, and the payment after it, would keep
        // its id and the request's personal fields. Erasure deletes the owner's keys in its own
        // transaction, so one made before it goes with it and one after it is refused here.
        if (!this.ownerStands(owner)) return { kind: "owner_gone" } as const;
        // The credential that asked, revoked or logged out after the auth stage let the request
        // by (in this process, or another not yet told), claims nothing either.
        if (stands?.() === false) return { kind: "actor_gone" } as const;
        const ours = and(
          eq(paymentIdempotencyKeys.owner, owner),
          eq(paymentIdempotencyKeys.key, key),
        );
        const row = tx.select().from(paymentIdempotencyKeys).where(ours).get();
        // A key written into the file is no claim of ours: its stored response is never replayed.
        // It goes, and this request claims the key; Stripe replays its own result for the key if
        // the intent was ever made.
        if (row && !this.ledger.seal.intact.idempotencyKey(row)) {
          this.ledger.reportTampered(
            "payment_idempotency_keys",
            owner,
            reportedIdempotencyKey(key),
          );
          tx.delete(paymentIdempotencyKeys).where(ours).run();
        } else if (row) {
          return this.claimHeld(row, hash, now, ours);
        }
        // A new intent: within the owner's day (a replay of one made is not another).
        const overDaily = this.overDaily(owner, now);
        if (overDaily !== null) return overDaily;
        // Its row must have a `seq` to take, asked before Stripe makes it: a sequence written into
        // the file at its end failed every insert after Stripe had made the intent, as "database or
        // disk is full", and nothing named it (probe 85d F5).
        const spent = spentIdsIn(this.db.$client, "payments", "the payments'", "seq");
        if (spent !== null) throw spent;
        const pending = {
          owner,
          key,
          requestHash: hash,
          state: "pending" as const,
          response: null,
        };
        tx.insert(paymentIdempotencyKeys)
          .values({ ...pending, claimedAt: now, seal: this.ledger.seal.idempotencyKey(pending) })
          .run();
        return { kind: "claimed", claimedAt: now } as const;
      },
      { behavior: "immediate" },
    );
  }

  /**
   * Whether the key is still held by a claim that runs (pending, for this request's body, within
   * its lease, sealed), read in a transaction of its own that takes no write lock (a read alone
   * leaves no snapshot open after it). Anything else is for `claim` to decide.
   */
  private claimStillRunning(owner: string, key: string, hash: string): boolean {
    const now = this.clock.now();
    return this.db.transaction(
      (tx) => {
        const row = tx
          .select()
          .from(paymentIdempotencyKeys)
          .where(and(eq(paymentIdempotencyKeys.owner, owner), eq(paymentIdempotencyKeys.key, key)))
          .get();
        return (
          row !== undefined &&
          row.state === "pending" &&
          row.requestHash === hash &&
          claimRuns(row.claimedAt, now) &&
          this.ledger.seal.intact.idempotencyKey(row)
        );
      },
      { behavior: "deferred" },
    );
  }

  /**
   * The refusal of an owner's new intent past `dailyIntents` in the last 24 hours (the intents the
   * ledger holds for it, and its claims still running), or null. Inside the claim's transaction,
   * so processes on one file count each other's. Read by the owner's intents of the day (its index
   * on owner and time): at most PAYMENT_DAILY_INTENTS' largest, 10,000, whatever its history,
   * and one by one against their seals only when they reach the cap. The rate limit alone (10 a
   * minute) let one owner store 14,400 intents a day of up to ~34 KB of description and metadata
   * each, never deleted (probe 83b F1: ~500 MB a day).
   */
  private overDaily(
    owner: string,
    now: number,
  ): { kind: "over_daily"; retryAfterSeconds: number } | null {
    const cap = this.dailyIntents;
    if (cap === 0) return null;
    const since = now - DAY_MS;
    const ownIntents = and(eq(payments.owner, owner), gt(payments.createdAt, since));
    const runningClaims = and(
      eq(paymentIdempotencyKeys.owner, owner),
      eq(paymentIdempotencyKeys.state, "pending"),
      gt(paymentIdempotencyKeys.claimedAt, now - CLAIM_LEASE_MS),
      lte(paymentIdempotencyKeys.claimedAt, now + CLAIM_LEASE_MS),
    );
    // Most owners are far from the cap: counted from the indexes alone, no row read whole. A row
    // written into the file only adds to this count, so under the cap here is under it. At most the
    // cap and DAILY_CAP_SLACK rows each, as the seal checks below (probe 85g F2: the memo's reading
    // of every row, 500,000 forged, took 46–64 ms a request).
    const readAtMost = cap + DAILY_CAP_SLACK;
    const intentSeqs = this.db
      .select({ seq: payments.seq })
      .from(payments)
      .where(ownIntents)
      .limit(readAtMost)
      .all()
      .map((row) => Number(row.seq));
    const claimTimes = this.db
      .select({ at: paymentIdempotencyKeys.claimedAt })
      .from(paymentIdempotencyKeys)
      .where(runningClaims)
      .limit(readAtMost)
      .all()
      .map((row) => Number(row.at));
    if (intentSeqs.length + claimTimes.length < cap) {
      this.atDailyCap.delete(owner);
      return null;
    }
    // Found at the cap before, and no row made or gone since: the same answer.
    const rows = JSON.stringify([
      intentSeqs.length,
      Math.max(...intentSeqs),
      claimTimes.length,
      Math.max(-1, ...claimTimes),
    ]);
    const known = this.atDailyCap.get(owner);
    if (known !== undefined && known.rows === rows && known.until > now) {
      return overDailyUntil(known.until, now);
    }
    // At the cap, or rows written into the file: only rows Palisade wrote count (probe 85a F1: 200
    // forged intents dated ahead refused an owner's every intent for good, and forged claims for a
    // day), each checked against its seal, newest first, until the cap is reached or DAILY_CAP_SLACK
    // rows past it were read. Stepped one row at a time: no page cursor for a forged value to hold.
    const recent: number[] = [];
    const running: number[] = [];
    const intents = this.db.$client.prepare<
      SealedPayment & { seal: string | null },
      [string, number, number]
    >(
      `SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments
       WHERE owner = ? AND created_at > ? ORDER BY created_at DESC LIMIT ?`,
    );
    try {
      for (const row of intents.iterate(owner, since, readAtMost)) {
        if (this.ledger.seal.intact.payment(row)) recent.push(Number(row.createdAt));
        else this.ledger.reportTampered("payments", row.id);
        if (recent.length === cap) break;
      }
    } finally {
      intents.finalize();
    }
    const claims = this.db.$client.prepare<
      SealedIdempotencyKey & { claimedAt: number; seal: string | null },
      [string, number, number, number]
    >(
      `SELECT owner, key, request_hash AS requestHash, state, response, claimed_at AS claimedAt, seal
       FROM payment_idempotency_keys
       WHERE owner = ? AND state = 'pending' AND claimed_at > ? AND claimed_at <= ? LIMIT ?`,
    );
    try {
      for (const row of claims.iterate(
        owner,
        now - CLAIM_LEASE_MS,
        now + CLAIM_LEASE_MS,
        readAtMost,
      )) {
        if (recent.length + running.length === cap) break;
        if (this.ledger.seal.intact.idempotencyKey(row)) running.push(Number(row.claimedAt));
        else {
          this.ledger.reportTampered(
            "payment_idempotency_keys",
            owner,
            reportedIdempotencyKey(row.key),
          );
        }
      }
    } finally {
      claims.finalize();
    }
    if (recent.length + running.length < cap) {
      this.atDailyCap.delete(owner);
      return null;
    }
    // The next may be made once the oldest intent counted leaves the day, or a claim still running
    // ends (Stripe may refuse it; its lease ends it at the latest): a cap held by claims alone
    // said a day (probe 83h F1). Never more than a day, however the clock stepped (83h F2).
    const frees = [
      ...recent.map((createdAt) => createdAt + DAY_MS),
      ...running.map((claimedAt) => claimedAt + CLAIM_LEASE_MS),
    ];
    const until = Math.min(...frees);
    this.atDailyCap.set(owner, { rows, until });
    return overDailyUntil(until, now);
  }

  /** What a claim finds in a key already held by a row Palisade wrote. */
  private claimHeld(
    row: typeof paymentIdempotencyKeys.$inferSelect,
    hash: string,
    now: number,
    ours: ReturnType<typeof and>,
  ): Claim {
    if (row.requestHash !== hash) return { kind: "key_reused" };
    if (row.state === "done" && row.response !== null) {
      return { kind: "done", response: JSON.parse(row.response) as IntentResponse };
    }
    if (!claimRuns(row.claimedAt, now)) {
      this.db.update(paymentIdempotencyKeys).set({ claimedAt: now }).where(ours).run();
      return { kind: "claimed", claimedAt: now };
    }
    return { kind: "pending" };
  }

  private rememberUnrecorded(owner: string, key: string, retryAt: number): void {
    const now = this.clock.now();
    for (const [held, at] of this.unrecorded) if (at <= now) this.unrecorded.delete(held);
    this.unrecorded.set(unrecordedKey(owner, key), retryAt);
  }

  /** When the 503 of this key's unrecorded intent said to retry, while that is still ahead. */
  private unrecordedRetryAt(owner: string, key: string): number | null {
    const held = unrecordedKey(owner, key);
    const retryAt = this.unrecorded.get(held);
    if (retryAt === undefined) return null;
    if (retryAt > this.clock.now()) return retryAt;
    this.unrecorded.delete(held);
    return null;
  }

  /**
   * Gives back this request's claim of the key, so that a retry with it is a fresh attempt. A lock
   * held by another connection must not turn Stripe's answer into a 503 "database busy" and leave
   * the claim pending for its lease, every retry meanwhile waiting 10 s for a 409 (probe 43a F2):
   * the delete waits for the lock (WaitingWrites), and a request with the key tries it first. Only
   * the claim taken at `claimedAt` goes, never one a takeover after its lease made meanwhile.
   */
  private release(owner: string, key: string, claimedAt: number, requestId: string): void {
    const context = { requestId };
    this.releases.run(
      unrecordedKey(owner, key),
      () => {
        this.db
          .delete(paymentIdempotencyKeys)
          .where(
            and(
              eq(paymentIdempotencyKeys.owner, owner),
              eq(paymentIdempotencyKeys.key, key),
              eq(paymentIdempotencyKeys.state, "pending"),
              eq(paymentIdempotencyKeys.claimedAt, claimedAt),
            ),
          )
          .run();
      },
      {
        waiting: () =>
          this.logger.warn(context, "idempotency key given back once the database lock goes"),
        written: () => this.logger.info(context, "idempotency key given back after the lock"),
        failed: (error) =>
          this.logger.error(
            { ...context, err: error },
            "idempotency key could not be given back; a retry with it waits for its lease to end",
          ),
      },
    );
  }

  async createIntent(
    owner: string,
    key: string,
    request: IntentRequest,
    acting: ActingRequest,
  ): Promise<IntentOutcome> {
    const gateway = this.gateway;
    if (gateway === null) throw new Error("payments are not configured");
    const hash = requestHash(request);
    const deadline = performance.now() + this.inProgressWaitMs;
    // A claim this process gave back while the file was locked goes first, if it can go now.
    this.releases.settle(unrecordedKey(owner, key));
    let claim = this.claim(owner, key, hash, acting.stands);
    while (claim.kind === "pending") {
      const retryAt = this.unrecordedRetryAt(owner, key);
      if (retryAt !== null) {
        const seconds = Math.max(1, Math.ceil((retryAt - this.clock.now()) / 1000));
        return { kind: "in_progress", retryAfterSeconds: seconds };
      }
      if (performance.now() >= deadline) return { kind: "in_progress" };
      await Bun.sleep(POLL_MS);
      this.releases.settle(unrecordedKey(owner, key));
      // Looked at without the write lock while the claim still runs: every waiting request taking
      // it each poll, in two processes on one file, met each other's locks and some were answered
      // 503 "database busy" (probe 50b F3). Taken only to claim or replay, and a lock met then is
      // one more poll of the wait, not an answer.
      if (this.claimStillRunning(owner, key, hash)) continue;
      try {
        claim = this.claim(owner, key, hash, acting.stands);
      } catch (error) {
        if (!isDatabaseBusy(error)) throw error;
      }
    }
    if (
      claim.kind === "key_reused" ||
      claim.kind === "owner_gone" ||
      claim.kind === "actor_gone" ||
      claim.kind === "over_daily"
    )
      return claim;
    if (claim.kind === "done") {
      if (!this.ledger.findOwned(owner, claim.response.id)) {
        // Deleted from the file, it is reported as one changed there is (once per row and process).
        this.ledger.reportTampered("payments", claim.response.id);
        return { kind: "payment_gone" };
      }
      return { kind: "created", response: claim.response, replayed: true };
    }

    let result: Awaited<ReturnType<PaymentGateway["createIntent"]>>;
    try {
      result = await intentPastKeptErrors(
        gateway,
        request,
        stripeIdempotencyKey(owner, key),
        this.clock,
      );
    } catch (error) {
      this.release(owner, key, claim.claimedAt, acting.requestId);
      throw error;
    }
    if (!result.ok) {
      this.logger.warn(
        { requestId: acting.requestId, kind: result.kind, reason: result.reason },
        "stripe did not create the payment intent",
      );
      this.release(owner, key, claim.claimedAt, acting.requestId);
      return result;
    }
    const response: IntentResponse = {
      id: result.id,
      clientSecret: result.clientSecret,
      status: result.status,
      amount: result.amount,
      currency: result.currency,
    };
    const now = this.clock.now();
    const details = {
      description: request.description ?? null,
      customerEmail: request.customerEmail ?? null,
      metadata: request.metadata ? JSON.stringify(request.metadata) : null,
    };
    // Erasure deletes the user's idempotency keys in its transaction; this one runs after it or
    // before it, never between. A claim that is gone and an owner that no longer stands mean the
    // owner was erased while Stripe worked: the intent exists and accounting keeps its row, but as
    // erasure leaves rows — under the pseudonym, without email, description, metadata or client
    // secret.
    const store = () =>
      this.db.transaction(
        () => {
          const claimed = this.db
            .select({ key: paymentIdempotencyKeys.key })
            .from(paymentIdempotencyKeys)
            .where(
              and(eq(paymentIdempotencyKeys.owner, owner), eq(paymentIdempotencyKeys.key, key)),
            )
            .get();
          // A claim gone is not proof of an erasure: a retry that took it over after its lease
          // and gave it back deletes it too, and a live user's intent was then stored under a
          // pseudonym and canceled at Stripe (probe 83d F1). The owner is asked, in this
          // transaction, as the claim asks it.
          const gone = claimed === undefined && !this.ownerStands(owner);
          const ownerAsStored = gone ? this.audit.pseudonymOf(owner) : owner;
          // Stored as erasure leaves rows when the owner is gone: no details.
          const detailsAsStored = gone
            ? { description: null, customerEmail: null, metadata: null }
            : details;
          const inserted = this.ledger.insert({
            id: result.id,
            owner: ownerAsStored,
            amount: result.amount,
            currency: result.currency,
            status: result.status,
            // Not kept: the 201 hands it to the client, and a replay answers from the key's stored
            // response (a day) or Stripe's own; kept with the payment, it could confirm or read an
            // open intent from any backup for good, and nothing read it (probe 87d F6).
            clientSecret: null,
            ...detailsAsStored,
            createdAt: now,
            updatedAt: now,
          });
          // An intent Stripe replays must be the one the ledger holds for this owner, amount and
          // currency. An answer naming another owner's intent (an upstream that writes what it
          // likes, probe 32b F3) would hand this caller that payment's client secret, and store it
          // as this key's result: nothing is written, and the answer is not trusted.
          if (
            !inserted &&
            !this.ledger.holdsAs(result.id, ownerAsStored, result, detailsAsStored)
          ) {
            return { gone, inserted, foreign: true };
          }
          if (!gone) {
            const done = {
              owner,
              key,
              requestHash: hash,
              state: "done" as const,
              response: JSON.stringify(response),
            };
            this.db
              .update(paymentIdempotencyKeys)
              .set({
                requestHash: done.requestHash,
                state: done.state,
                response: done.response,
                seal: this.ledger.seal.idempotencyKey(done),
              })
              .where(
                and(eq(paymentIdempotencyKeys.owner, owner), eq(paymentIdempotencyKeys.key, key)),
              )
              .run();
          }
          return { gone, inserted, foreign: false };
        },
        { behavior: "immediate" },
      );
    // Stripe has made the intent: a lock held by another writer (a backup, a long erasure) must
    // not turn that into a 503 whose retry meets the claim still pending for its whole lease. The
    // write is tried again, the event loop running in between, for as long as a waiting request
    // waits for an intent in progress; only past that is the lock the answer.
    const storeBy = performance.now() + this.inProgressWaitMs;
    let stored: ReturnType<typeof store>;
    for (;;) {
      try {
        stored = store();
        break;
      } catch (error) {
        const busy = isDatabaseBusy(error);
        // Any other failure (a full disk, an I/O error) is the same situation: Stripe has made the
        // intent, and the claim stays pending for its lease (probe 29c F1: it was a 503 "retry
        // shortly" whose retries met the pending claim for two minutes, and the log did not name
        // the intent).
        if (!busy || performance.now() >= storeBy) {
          // The claim stays pending until its lease ends: a retry before then to this process is
          // told when, at once; another process cannot tell this claim from one whose Stripe call
          // is still under way, and answers "in progress" (Retry-After: 1) after its wait (probe
          // 29e F4; README). After the lease, the retry takes the claim over and Stripe replays the
          // intent.
          const retryAfter = Math.ceil(CLAIM_LEASE_MS / 1000);
          this.rememberUnrecorded(owner, key, this.clock.now() + retryAfter * 1000);
          const fields = { requestId: acting.requestId, paymentId: result.id };
          if (busy) {
            this.logger.warn(
              fields,
              "payment intent made by Stripe could not be recorded: the database stayed locked",
            );
          } else {
            this.logger.error(
              { ...fields, err: error },
              "payment intent made by Stripe could not be recorded",
            );
          }
          return {
            kind: "unrecorded",
            retryAfterSeconds: retryAfter,
            reason: busy ? "busy" : "failed",
          };
        }
        await Bun.sleep(RECORD_RETRY_MS);
      }
    }
    const { gone: erased, inserted, foreign } = stored;
    if (foreign) {
      this.release(owner, key, claim.claimedAt, acting.requestId);
      this.logger.error(
        { requestId: acting.requestId, paymentId: result.id },
        "stripe answered a new payment intent with one the ledger holds for another owner, amount, currency or details: not trusted",
      );
      return { ok: false, kind: "bad_response", reason: INTENT_OF_ANOTHER_PAYMENT };
    }
    if (erased) return await this.abandonedByErasure(result, inserted, owner, acting);
    if (!inserted) {
      // Stripe replayed an intent the ledger holds (its idempotency key's stored result was lost,
      // or failed its seal): nothing new was made, so nothing is counted or audited as made.
      this.logger.info(
        { requestId: acting.requestId, paymentId: result.id },
        "payment intent replayed by Stripe for a payment already recorded",
      );
      return { kind: "created", response, replayed: true };
    }
    this.recordCreated(result, acting.actor, acting);
    return { kind: "created", response, replayed: false };
  }

  private recordCreated(
    intent: { id: string; status: string; amount: number; currency: string },
    actor: string | null,
    acting: ActingRequest,
    ip = acting.ip,
  ): void {
    this.metrics.payments.labels(intent.status).inc();
    this.audit.record({
      type: "payment.intent.created",
      outcome: "success",
      actor,
      ip,
      route: acting.route,
      requestId: acting.requestId,
      detail: { paymentId: intent.id, amount: intent.amount, currency: intent.currency },
    });
  }

  /**
   * The intent Stripe made while its owner was erased: recorded as erasure leaves payments (under
   * the pseudonym, without the address), canceled at Stripe, and answered as a request after the
   * erasure is, 401. Its client secret was answered to the erased account's client, who could pay
   * an intent Palisade holds with no owner, order or metadata (probe 83a F2). A cancel Stripe
   * refuses or cannot take leaves the intent open there, payable by no one: no one holds its
   * client secret.
   */
  private async abandonedByErasure(
    intent: { id: string; status: string; amount: number; currency: string },
    inserted: boolean,
    owner: string,
    acting: ActingRequest,
  ): Promise<{ kind: "owner_gone" }> {
    // As erasure leaves the owner's earlier rows: under the pseudonym, without the address.
    if (inserted) this.recordCreated(intent, this.audit.pseudonymOf(owner), acting, null);
    const canceled = await this.gateway!.cancelIntent(intent.id);
    if (canceled.ok) {
      this.logger.info(
        { requestId: acting.requestId, paymentId: intent.id, status: canceled.status },
        "payment intent canceled at Stripe: its owner was erased while Stripe made it",
      );
    } else {
      this.logger.warn(
        { requestId: acting.requestId, paymentId: intent.id, reason: canceled.reason },
        "payment intent of an erased owner not canceled at Stripe: Stripe refused or did not answer; if it is still open there, no one holds its client secret",
      );
    }
    return { kind: "owner_gone" };
  }

  /**
   * Refunds the payment, `amount` or the rest. With the admin's `idempotencyKey`, the refund is the
   * one asked under that key: a request with it again is answered with that refund (for as long as
   * it is kept among the payment's refunds, a day), whatever the refunded total has become since;
   * with another amount, it is `key_reused`. Without one, a retry is that refund only while the
   * refunded total stands.
   */
  async refund(
    id: string,
    amount: number | undefined,
    acting: ActingRequest,
    idempotencyKey?: string,
  ): Promise<RefundOutcome> {
    let outcome: RefundOutcome;
    try {
      outcome = await this.refundOnce(id, amount, acting, idempotencyKey);
    } catch (error) {
      // A lock past its wait (probe 94b F2), or anything else: the request's row still ends.
      const trail = this.refundTrails.get(acting);
      this.refundTrails.delete(acting);
      if (trail) {
        const reason = isDatabaseBusy(error) ? "database_busy" : "error";
        this.auditRefundUnmade(acting, id, trail.sent ? "undecided" : "not_made", reason);
      }
      throw error;
    }
    const trail = this.refundTrails.get(acting);
    this.refundTrails.delete(acting);
    if (trail === undefined) return outcome;
    if (outcome.kind === "refunded") {
      // Answered with a refund an earlier request made and had audited (a retry of one found
      // made): this request made none, and says which it was answered with (probe 94b F1).
      if (!trail.audited.has(outcome.refund.id)) {
        this.auditRefundUnmade(acting, id, "not_made", "earlier_refund_answered", {
          refundId: outcome.refund.id,
        });
      }
      return outcome;
    }
    // Stripe asked to make it and no answer it can be told by (a server error, a timeout, an
    // answer of another shape): it may be made, and stays among the payment's undecided refunds,
    // which the next refund of the payment settles (94b F1: audited as not made, Stripe had made it).
    const undecided = trail.sent && "ok" in outcome && outcome.kind !== "refused";
    this.auditRefundUnmade(acting, id, undecided ? "undecided" : "not_made", reasonOf(outcome));
    return outcome;
  }

  /**
   * A refund audited as asked for (`payment.refund.requested`) and answered without one it made:
   * not made (`payment.refund.not_made`), or not known (`payment.refund.undecided`), and why, as
   * the answer's kind (never Stripe's text). Each retry blocked by an earlier refund wrote a
   * `requested` row and nothing after it (probe 92d: seven for one refund).
   */
  private auditRefundUnmade(
    acting: ActingRequest,
    id: string,
    what: "not_made" | "undecided",
    reason: string,
    more: Record<string, string> = {},
  ): void {
    recordDone(this.audit, this.logger, {
      type: what === "not_made" ? "payment.refund.not_made" : "payment.refund.undecided",
      outcome: "failure",
      actor: acting.actor,
      ip: acting.ip,
      route: acting.route,
      requestId: acting.requestId,
      detail: { paymentId: id, reason, ...more },
    });
  }

  private async refundOnce(
    id: string,
    amount: number | undefined,
    acting: ActingRequest,
    idempotencyKey?: string,
  ): Promise<RefundOutcome> {
    const keyed = idempotencyKey === undefined ? null : keyedRefundKey(id, idempotencyKey);
    const gateway = this.gateway;
    if (gateway === null) throw new Error("payments are not configured");
    // A refund of this payment whose ledger write still waits for a lock in this process holds the
    // payment, however long the lock lasted: tried once more here, it is 409 while it waits.
    if (!this.refundWrites.settle(id)) return { kind: "in_progress" };
    const now = this.clock.now();
    const context = { requestId: acting.requestId, paymentId: id };
    type Claimed =
      | RefundStart
      | { kind: "settle"; row: PaymentRow; entries: UndecidedRefund[] }
      | { kind: "answer"; outcome: RefundOutcome };
    const claimed = this.db.transaction(
      (): Claimed => {
        if (acting.stands?.() === false) return { kind: "answer", outcome: { kind: "actor_gone" } };
        const row = this.ledger.find(id);
        if (!row) return { kind: "answer", outcome: { kind: "not_found" } };
        if (row.refundStartedAt !== null && claimRuns(row.refundStartedAt, now)) {
          return { kind: "answer", outcome: { kind: "in_progress" } };
        }
        const entries = this.undecidedRefunds(row, now);
        const wanted = amount ?? row.amount - row.amountRefunded;
        // The refund asked under this Idempotency-Key before, of another amount: the key reused.
        const own = keyed === null ? undefined : entries.find((entry) => entry.key === keyed);
        if (own !== undefined && !isRetryOf(own, amount, row)) {
          return { kind: "answer", outcome: { kind: "key_reused" } };
        }
        // A retry of a refund found made since its answer was lost is answered with it, whatever
        // the payment's status: charge.refunded having counted it, a retry of a refund of the
        // whole rest was refused (probe 61a F2). One asked under this request's Idempotency-Key is
        // its answer again, kept for the key's next retry and not audited again (as an intent's).
        const retried = entries.find((entry) => entry.made && answers(entry, keyed, amount, row));
        if (retried?.made) {
          if (keyed === null) {
            this.auditRequested(acting, row, wanted);
            this.ledger.writeUndecided(
              row,
              entries.filter((entry) => entry !== retried),
            );
          }
          return {
            kind: "answer",
            outcome: {
              kind: "refunded",
              refund: { id: retried.made.id, amount: retried.amount, status: retried.made.status },
              payment: viewOf(row),
              replayed: keyed !== null,
            },
          };
        }
        // Refunds whose outcome was never told are asked about before anything else is decided:
        // a retry of one counted meanwhile by charge.refunded was refused as too much (probe 60c F5).
        if (entries.some((entry) => entry.made === undefined)) {
          this.auditRequested(acting, row, wanted);
          this.claimRefund(id, now);
          return { kind: "settle", row, entries };
        }
        if (row.status !== "succeeded") {
          return { kind: "answer", outcome: { kind: "not_refundable", status: row.status } };
        }
        return this.startRefund(id, row, amount, entries, now, acting, keyed);
      },
      { behavior: "immediate" },
    );
    if (claimed.kind === "answer") return claimed.outcome;
    let start: RefundStart;
    if (claimed.kind === "settle") {
      const settled = await this.settleUndecided(gateway, claimed, amount, now, acting, keyed);
      if (settled.kind !== "start") return settled;
      start = settled;
    } else {
      start = claimed;
    }
    // This refund's claim: its end clears only this claim, never one a later refund took.
    const claim = start.claimedAt;

    const trail = this.refundTrails.get(acting);
    if (trail) trail.sent = true;
    const { result } = await refundPastFailures(
      gateway,
      id,
      start.key,
      start,
      this.clock,
      this.refundWalks,
    );
    if (!result.ok) {
      if (result.reason === UNDECIDED_NOT_THAT_REFUND) {
        this.logger.error(
          context,
          "the refund Stripe lists under this refund's key is not that refund; it is kept, and no other refund of the payment starts until an operator clears it (payments:undecided)",
        );
      } else {
        this.logger.warn(
          { ...context, kind: result.kind, reason: result.reason },
          "stripe did not make the refund",
        );
      }
      // Refused (a 4xx), Stripe made nothing; anything else may have made it, and the refund
      // stays among the payment's undecided ones.
      const decided = result.kind === "refused";
      this.writeOrWait(id, () => this.endClaim(id, claim, decided ? start.key : null), context);
      // The admin's key was first sent with another amount, and Stripe holds it to that one: a
      // refund it failed, whose entry went with its answer, so only Stripe still knew (probe 78c
      // F3: a 502, where the key's other amount is otherwise a 409).
      if (result.kind === "refused" && result.keyReused && isKeyedRefund(start.key)) {
        return { kind: "key_reused" };
      }
      return result;
    }
    // Only a `succeeded` refund is money returned. A `pending` one (or `requires_action`) is
    // recorded when Stripe settles it (`charge.refunded` carries the charge's refunded total); a
    // `failed` or `canceled` one returned nothing and is the caller's 502.
    if (result.status === "failed" || result.status === "canceled") {
      this.logger.warn(
        { ...context, refundId: result.id, status: result.status },
        "stripe reported the refund as not made",
      );
      this.writeOrWait(id, () => this.endClaim(id, claim, start.key), context);
      return { ok: false, kind: "refused", reason: `refund ${result.status}` };
    }
    return this.madeRefund(id, start, claim, result, acting);
  }

  /**
   * The payment's refunds whose outcome Stripe has not told (./undecided-refund.ts), those found
   * made more than a day ago left out. One value Palisade did not store is reported and read as
   * none.
   */
  private undecidedRefunds(row: PaymentRow, now: number): UndecidedRefund[] {
    const entries = this.ledger.undecidedOf(row.id, row.refundUndecided);
    if (entries === null) {
      this.logger.error(
        { paymentId: row.id },
        "the payment's undecided refunds are none Palisade stored (written into the database file); they are ignored",
      );
      return [];
    }
    // One found made at a time ahead of the clock (set back since) is kept a day from now, not
    // from that time: it answered a new refund of its amount for as long as the clock was off
    // (probe 62a F3). The list is written with it so at the refund's next write.
    return entries
      .map((entry) =>
        entry.made && entry.made.at > now ? { ...entry, made: { ...entry.made, at: now } } : entry,
      )
      .filter((entry) => !entry.made || now - entry.made.at < MADE_KEPT_MS);
  }

  /**
   * The payment's refunds whose outcome Stripe never told, as an operator sees them
   * (`payments:undecided`); null when the ledger holds no such payment (or it fails its seal).
   */
  undecidedOf(id: string): UndecidedRefund[] | null {
    const row = this.ledger.find(id);
    if (!row) return null;
    return this.ledger.undecidedOf(id, row.refundUndecided) ?? [];
  }

  /**
   * An operator's clearing of them (`payments:undecided --clear`), once the payment's refunds have
   * been checked in Stripe's Dashboard: what no refund can settle (a payment with more refunds
   * than one read holds, a refund Stripe lists under a key that is not it). Audited; refused while
   * a refund of the payment runs.
   */
  clearUndecided(
    id: string,
  ):
    | { kind: "not_found" }
    | { kind: "in_progress" }
    | { kind: "cleared"; entries: UndecidedRefund[] } {
    return this.db.transaction(
      () => {
        const row = this.ledger.find(id);
        if (!row) return { kind: "not_found" } as const;
        if (row.refundStartedAt !== null && claimRuns(row.refundStartedAt, this.clock.now())) {
          return { kind: "in_progress" } as const;
        }
        const entries = this.ledger.undecidedOf(id, row.refundUndecided) ?? [];
        if (row.refundUndecided === null) return { kind: "cleared", entries } as const;
        this.ledger.writeUndecided(row, []);
        this.audit.record({
          type: "payment.refund.undecided_cleared",
          outcome: "success",
          actor: "cli",
          detail: {
            paymentId: id,
            cleared: entries.length,
            amounts: entries.map((entry) => entry.amount).join(","),
          },
        });
        return { kind: "cleared", entries } as const;
      },
      { behavior: "immediate" },
    );
  }

  /** The must-keep row of a refund asked for, in the claim's transaction (probe 60a F-AUD2). */
  private auditRequested(acting: ActingRequest, row: PaymentRow, amount: number): void {
    // Written before Stripe is asked: a refund the audit log cannot record is not made (a
    // failure rolls the claim back). With the log refusing rows (its id sequence written past
    // 2^53), refunds went on, each with an error line alone, while a sign-in was refused.
    this.refundTrails.set(acting, { sent: false, audited: new Set() });
    this.audit.record({
      type: "payment.refund.requested",
      outcome: "info",
      actor: acting.actor,
      ip: acting.ip,
      route: acting.route,
      requestId: acting.requestId,
      detail: { paymentId: row.id, amount, currency: row.currency },
    });
  }

  private claimRefund(id: string, now: number): void {
    this.db.update(payments).set({ refundStartedAt: now }).where(eq(payments.id, id)).run();
  }

  /**
   * Inside the claim's transaction: checks the amount against what is left, claims the payment
   * (if not claimed already: `claimed`) and writes the refund among its undecided ones before
   * Stripe is asked, so a stop or a crash while Stripe works leaves it to be asked about (probe
   * 60c F2).
   */
  private startRefund(
    id: string,
    row: PaymentRow,
    amount: number | undefined,
    entries: UndecidedRefund[],
    now: number,
    acting: ActingRequest,
    keyed: string | null,
    claimed = false,
  ): RefundStart | { kind: "answer"; outcome: RefundOutcome } {
    const remaining = row.amount - row.amountRefunded;
    const wanted = amount ?? remaining;
    if (wanted > remaining || remaining === 0) {
      if (claimed) this.ledger.writeUndecided(row, entries);
      return { kind: "answer", outcome: { kind: "too_much", remaining } };
    }
    if (!claimed) this.auditRequested(acting, row, wanted);
    // Claimed by a settle, the claim is renewed: the reads of Stripe's refunds took part of its
    // lease, and the refund's own calls must end inside one (probe 61c F1).
    this.claimRefund(id, now);
    const key = keyed ?? firstRefundKey(id, row.amountRefunded, wanted);
    const own = { key, amount: wanted, before: row.amountRefunded, at: now };
    this.ledger.writeUndecided(row, [...entries.filter((entry) => entry.key !== key), own]);
    return {
      kind: "start",
      amount: wanted,
      refundedBefore: row.amountRefunded,
      currency: row.currency,
      row,
      key,
      claimedAt: now,
    };
  }

  /**
   * Asks Stripe about each of the payment's refunds whose outcome was never told (a refund made
   * under its first key or one walked to from it). Not made, it goes. Made, it is recorded and
   * audited, and kept, made, for a day: the answer to a retry of its amount (this request's, if
   * its amount is that); a refund of another amount that found one is told so (409, the admin
   * asks again knowing of it). Refunds that cannot be read leave them as they were: 503. Then the
   * refund asked for starts as any does.
   */
  private async settleUndecided(
    gateway: PaymentGateway,
    claimed: { row: PaymentRow; entries: UndecidedRefund[] },
    amount: number | undefined,
    claim: number,
    acting: ActingRequest,
    keyed: string | null,
  ): Promise<RefundStart | RefundOutcome> {
    const { row } = claimed;
    const id = row.id;
    const context = { requestId: acting.requestId, paymentId: id };
    const release = () => this.writeOrWait(id, () => this.ledger.releaseRefund(id, claim), context);
    const entries: UndecidedRefund[] = [];
    const found: { entry: UndecidedRefund; refund: CreatedRefund }[] = [];
    // Not listed, and young enough that Stripe may still be making them.
    const unlisted: UndecidedRefund[] = [];
    for (const entry of claimed.entries) {
      if (entry.made) {
        entries.push(entry);
        continue;
      }
      // Each read may take ~65 s: none starts past WALK_MS into the claim, so the last ends inside
      // it (probe 61c F1: ten slow reads outlived it, and another refund took the payment).
      if (this.clock.now() >= claim + WALK_MS) {
        release();
        return OUT_OF_TIME;
      }
      const listed = await gateway.refundMadeUnder(id, entry.amount, row.currency, entry.key, true);
      if (!listed.ok && listed.kind === "unavailable") {
        release();
        return listed;
      }
      if (!listed.ok) {
        // Left as it is, and nothing else started: dropped, the refund asked for went on beside a
        // refund Stripe holds under the key (probe 61a F5).
        this.logger.error(
          { ...context, reason: listed.reason },
          "the refund Stripe lists under an undecided refund's key is not that refund; it is kept, and no other refund of the payment starts until an operator clears it (payments:undecided)",
        );
        release();
        // Not Stripe down: retried, it is this answer again (probe 92b F2: a 503 said "retry
        // shortly" for as long as no operator looked).
        return { ok: false, kind: "bad_response", reason: UNDECIDED_NOT_THAT_REFUND };
      }
      const refund = listed.refund;
      const now = this.clock.now();
      if (refund === null && now - entry.at < UNLISTED_KEPT_MS) {
        // Written ahead of this clock (set back since, or another process's ahead), it is kept as
        // if written now: held from its time, it held every other refund for as long as the clock
        // was off, with a Retry-After past ten minutes (probe 61c F4).
        const kept = entry.at > now ? { ...entry, at: now } : entry;
        entries.push(kept);
        unlisted.push(kept);
        continue;
      }
      if (refund === null || refund.status === "failed" || refund.status === "canceled") continue;
      this.logger.info(
        { ...context, refundId: refund.id, amount: refund.amount },
        "a refund whose answer was lost was made by Stripe: recorded now",
      );
      const made = {
        ...entry,
        made: { id: refund.id, status: refund.status, at: this.clock.now() },
      };
      entries.push(made);
      found.push({ entry: made, refund });
    }
    let next: RefundStart | { kind: "answer"; outcome: RefundOutcome };
    // The claim lapsed while Stripe was read, and another refund of the payment took it: that one
    // read the same list, settles it, and holds the payment; this one writes nothing (probe 61c F1:
    // it wrote its stale list over the other's and started a refund beside it).
    let lapsed = false;
    try {
      next = this.db.transaction(
        () => {
          const now = this.clock.now();
          // The list as read, too: a retry answered with a refund found made takes it off without
          // the claim, once the claim has lapsed; written over, the refund was back as the answer
          // to a new refund of its amount (probe 62a F2). Nothing else writes it while the claim runs.
          const held = this.ledger.find(id);
          if (
            held &&
            (held.refundStartedAt !== claim || held.refundUndecided !== row.refundUndecided)
          ) {
            lapsed = true;
            return { kind: "answer", outcome: { kind: "in_progress" } } as const;
          }
          for (const { entry, refund } of found) {
            if (refund.status !== "succeeded") continue;
            const recorded = this.ledger.recordRefund(id, entry.before + refund.amount, now, null);
            if (recorded.kind === "recorded" && recorded.entered) {
              this.metrics.payments.labels(recorded.entered).inc();
            }
          }
          const current = this.ledger.find(id);
          if (!current) {
            this.ledger.releaseRefund(id, claim);
            return { kind: "answer", outcome: { kind: "not_found" } } as const;
          }
          const retried = entries.find(
            (entry) => entry.made && answers(entry, keyed, amount, current),
          );
          const newlyMade = found[0];
          if (retried?.made || newlyMade) {
            // One asked under an Idempotency-Key stays, the answer to the key's next retry too.
            this.ledger.writeUndecided(
              current,
              entries.filter((entry) => entry !== retried || keyed !== null),
            );
            this.ledger.releaseRefund(id, claim);
            const shown = retried?.made ? retried : newlyMade!.entry;
            const refund = {
              id: shown.made!.id,
              amount: shown.amount,
              status: shown.made!.status,
            };
            const payment = viewOf(current);
            return {
              kind: "answer",
              outcome: retried?.made
                ? { kind: "refunded", refund, payment, replayed: keyed !== null }
                : { kind: "earlier_refund_made", refund, payment },
            } as const;
          }
          const leave = (outcome: RefundOutcome) => {
            this.ledger.writeUndecided(current, entries);
            this.ledger.releaseRefund(id, claim);
            return { kind: "answer", outcome } as const;
          };
          if (current.status !== "succeeded") {
            return leave({ kind: "not_refundable", status: current.status });
          }
          // A refund Stripe may still be making holds every other: only its own retry (its key)
          // goes on, which Stripe answers as that refund (probe 61a F1: dropped, it was made
          // after the refund asked for, and its retry made it again).
          const wanted = amount ?? current.amount - current.amountRefunded;
          const key = keyed ?? firstRefundKey(id, current.amountRefunded, wanted);
          if (unlisted.some((entry) => entry.key !== key)) {
            const until = Math.max(...unlisted.map((entry) => entry.at)) + UNLISTED_KEPT_MS;
            return leave({
              kind: "earlier_refund_undecided",
              retryAfterSeconds: Math.max(1, Math.ceil((until - now) / 1000)),
            });
          }
          return this.startRefund(id, current, amount, entries, now, acting, keyed, true);
        },
        { behavior: "immediate" },
      );
    } catch (error) {
      release();
      // Stripe made them, whatever this process could write: audited now (queued while the
      // database is locked), each once; the next refund of the payment records them in the ledger
      // (probe 94b F2: a lock here left them audited by no one until a retry came).
      for (const { entry, refund } of found)
        this.auditRefund(acting, id, row.currency, refund, entry);
      throw error;
    }
    if (lapsed) {
      this.logger.warn(
        context,
        "the refund's claim of the payment lapsed while Stripe's refunds were read; another refund holds it, and this one made nothing",
      );
    } else {
      for (const { entry, refund } of found)
        this.auditRefund(acting, id, row.currency, refund, entry);
    }
    if (next.kind === "answer") {
      if (next.outcome.kind === "too_much") release();
      return next.outcome;
    }
    return next;
  }

  /**
   * Ends the refund's claim; takes the refund off the payment's undecided ones (`decided`, its
   * first key) when Stripe has said what it made of it.
   */
  private endClaim(id: string, claim: number, decided: string | null): void {
    this.db.transaction(
      () => {
        if (decided !== null) this.dropUndecided(id, decided);
        this.ledger.releaseRefund(id, claim);
      },
      { behavior: "immediate" },
    );
  }

  /** Marks the refund whose first key is `key` made, among the payment's refunds kept. */
  private markMade(id: string, key: string, made: NonNullable<UndecidedRefund["made"]>): void {
    this.rewriteUndecided(id, (entries) =>
      entries.map((entry) => (entry.key === key ? { ...entry, made } : entry)),
    );
  }

  /** Takes the refund whose first key is `key` off the payment's undecided ones. */
  private dropUndecided(id: string, key: string): void {
    this.rewriteUndecided(id, (entries) => entries.filter((entry) => entry.key !== key));
  }

  /** Writes the payment's kept refunds as `change` makes them, when it has a list Palisade wrote. */
  private rewriteUndecided(
    id: string,
    change: (entries: UndecidedRefund[]) => UndecidedRefund[],
  ): void {
    const row = this.ledger.find(id);
    if (!row || row.refundUndecided === null) return;
    const entries = this.ledger.undecidedOf(id, row.refundUndecided);
    if (entries === null) return;
    this.ledger.writeUndecided(row, change(entries));
  }

  /**
   * A refund Stripe made (or has pending): recorded (a `succeeded` one counted), taken off the
   * payment's undecided ones, its claim ended, audited once, and answered.
   */
  private madeRefund(
    id: string,
    start: RefundStart,
    claim: number,
    result: CreatedRefund,
    acting: ActingRequest,
  ): RefundOutcome {
    // A refund asked under an Idempotency-Key that Stripe answers as made before is not counted
    // here: its Stripe key holds whatever the refunded total has become, so a retry once its entry
    // had gone (ten keyed refunds later, cleared, or past its day) counted it again on top of
    // itself (probe 78c F1). Whether it was counted is not known here; its charge.refunded, whose
    // total is Stripe's, records it if it was not.
    const mayBeCounted = result.replayed && isKeyedRefund(start.key);
    const settled = result.status === "succeeded" && !mayBeCounted;
    const refundedTotal = start.refundedBefore + result.amount;
    // One time for the row and the answer when the write goes through at once; one that waited
    // for a lock is the time it is written (the answer, sent before it, cannot know it).
    const recordedAt = this.clock.now();
    let writes = 0;
    const made = {
      requestId: acting.requestId,
      paymentId: id,
      refundId: result.id,
      amount: result.amount,
    };
    this.writeOrWait(
      id,
      () => {
        const at = writes++ === 0 ? recordedAt : this.clock.now();
        const entered = this.db.transaction(
          () => {
            // Asked under an Idempotency-Key, it stays, made: the answer to the key's retries.
            if (isKeyedRefund(start.key)) {
              this.markMade(id, start.key, {
                id: result.id,
                status: result.status,
                at: this.clock.now(),
              });
            } else {
              this.dropUndecided(id, start.key);
            }
            if (!settled) return this.ledger.releaseRefund(id, claim);
            const recorded = this.ledger.recordRefund(id, refundedTotal, at, claim);
            if (recorded.kind === "absent") {
              // Changed in the file while Stripe worked: the refund is made (audited below, its
              // id in this line), the row is not trusted with it; the claim ends all the same.
              this.ledger.releaseRefund(id, claim);
              this.logger.error(
                made,
                "refund made by Stripe; the payment's row fails its seal, so it is not recorded there",
              );
            }
            return recorded.kind === "recorded" ? recorded.entered : null;
          },
          { behavior: "immediate" },
        );
        if (entered) this.metrics.payments.labels(entered).inc();
      },
      made,
    );
    this.auditRefund(acting, id, start.currency, result);
    return {
      kind: "refunded",
      refund: { id: result.id, amount: result.amount, status: result.status },
      replayed: isKeyedRefund(start.key) && result.replayed,
      // The payment as this refund leaves it, from the row verified when it started: not read
      // again, so neither a lock nor a row changed meanwhile turns a refund made into an error.
      // Its owner's details as they are now, though: an erasure while Stripe worked stripped them,
      // and the answer handed them back to the admin (probe 87d F5).
      payment: viewOf(
        this.withDetailsAsNow(
          settled ? this.ledger.afterRefund(start.row, refundedTotal, recordedAt) : start.row,
        ),
      ),
    };
  }

  /**
   * `row` with the description, email and metadata its payment holds now: none when the row is
   * gone, stripped or fails its seal (a read, which a lock never holds up).
   */
  private withDetailsAsNow(row: PaymentRow): PaymentRow {
    const now = this.ledger.find(row.id);
    return {
      ...row,
      description: now?.description ?? null,
      customerEmail: now?.customerEmail ?? null,
      metadata: now?.metadata ?? null,
    };
  }

  /**
   * The refund's `payment.refund` row, once: a refund Stripe replayed was audited when it was
   * answered first, unless that answer was lost. Queued in the audit log while the database is
   * locked, and written once the lock goes.
   */
  private auditRefund(
    acting: ActingRequest,
    id: string,
    currency: string,
    refund: CreatedRefund,
    foundFor?: UndecidedRefund,
  ): void {
    if (refund.replayed && (this.auditedHere.get(refund.id) || this.refundAudited(refund.id))) {
      return;
    }
    this.auditedHere.set(refund.id, true);
    this.refundTrails.get(acting)?.audited.add(refund.id);
    recordDone(this.audit, this.logger, {
      type: "payment.refund",
      outcome: refund.status === "succeeded" ? "success" : "info",
      actor: acting.actor,
      ip: acting.ip,
      route: acting.route,
      requestId: acting.requestId,
      detail: {
        paymentId: id,
        refundId: refund.id,
        amount: refund.amount,
        currency,
        status: refund.status,
        // Found made by a later request, after the one that asked for it had no answer: when that
        // one asked (its `payment.refund.undecided` row), which ties the two (probe 94b F1).
        ...(foundFor !== undefined && foundFor.at > 0
          ? { askedAt: new Date(foundFor.at).toISOString() }
          : {}),
      },
    });
  }

  /**
   * Whether a refund is in the audit log already. A refund Stripe has not settled leaves the
   * payment's refunded total as it was, so a retry of its amount derives the same key and Stripe
   * replays that refund: each retry wrote another `payment.refund` row for the whole amount, three
   * refunds of 5,000 on a payment of 5,000 in the log where Stripe made one (probe 59a F2). Read
   * by the type's index (refunds are few), and only a row the audit log vouches for counts: one
   * written into the file, or a detail that is not JSON, neither keeps a refund out of the log nor
   * fails the refund (probe 59c F2: one row's detail made `'{'` was a 500 for every replayed refund,
   * its refund recorded and never audited). Unreadable, the refund is audited (a row too many
   * rather than one missing).
   */
  private refundAudited(refundId: string): boolean {
    try {
      return this.db
        .select()
        .from(auditEvents)
        .where(
          and(
            eq(auditEvents.type, "payment.refund"),
            sql`CASE WHEN typeof(${auditEvents.detail}) = 'text' AND json_valid(${auditEvents.detail}) THEN json_extract(${auditEvents.detail}, '$.refundId') END = ${refundId}`,
          ),
        )
        .all()
        .some((row) => this.audit.vouches(row));
    } catch (error) {
      this.logger.warn({ err: error, refundId }, "refund's audit rows unreadable; audited again");
      return false;
    }
  }

  /**
   * Writes what a refund Stripe answered changes in the ledger (its record, or the end of its
   * claim). A refund made is money returned: a database locked at that moment (another process, a
   * CLI command, a backup) must not turn it into a 503 that records nothing and invites a second
   * refund. The write then waits, tried again every RECORD_RETRY_MS until the lock goes; meanwhile
   * this process answers 409 to any other refund of the payment, however long the lock lasts (a
   * process stopped before that leaves the total to Stripe's `charge.refunded`: the refund id is
   * in the log line). Returns whether it was written now.
   */
  private writeOrWait(
    paymentId: string,
    write: () => void,
    context: Record<string, unknown>,
  ): boolean {
    // What Stripe did is done: any other failure to write it is logged with the refund's ids and
    // answered as done, never a 500 that hides a refund made.
    const failed = (error: unknown) =>
      this.logger.error(
        { ...context, err: error },
        "refund answered by Stripe could not be recorded; charge.refunded will record its total",
      );
    return this.refundWrites.run(paymentId, write, {
      waiting: () =>
        this.logger.warn(
          context,
          "refund answered by Stripe; its record waits for the database lock",
        ),
      written: () => this.logger.info(context, "refund recorded after the database lock"),
      failed,
    });
  }

  /**
   * At a stop: the refunds' records and the claims' give-backs still waiting for another
   * connection's lock are tried until it goes, for `maxWaitMs` at most; each left is logged, as it
   * stays undone (probe 44b F1: dropped without a word, a refund Stripe made missing from the ledger
   * and a key answering 409 for its claim's two minutes).
   */
  async stop(maxWaitMs: number): Promise<void> {
    await Promise.all([this.refundWrites.drain(maxWaitMs), this.releases.drain(maxWaitMs)]);
    this.reportUndone("the database stayed locked");
  }

  /** Logs each refund record and claim still waiting for the lock, as the process stops (`why`). */
  reportUndone(why: string): void {
    for (const paymentId of this.refundWrites.pending()) {
      this.logger.error(
        { paymentId },
        `refund answered by Stripe not recorded before the stop (${why}); charge.refunded will record its total`,
      );
    }
    const claims = this.releases.pending().length;
    if (claims > 0) {
      this.logger.warn(
        { claims },
        `Idempotency-Key claims not given back before the stop (${why}): a retry with such a key is answered 409 until its claim's two minutes end`,
      );
    }
  }

  /**
   * Deletes idempotency keys past their 24 hours, and those the file dates more than 24 hours ahead
   * (no process stamped them: kept, they were never pruned), a bounded number per run. Not those
   * dated less far ahead: a claim still at Stripe when the clock was stepped back minutes is one,
   * and deleting it stored its payment as an erased owner's (probe 51b F2).
   */
  prune(now: number): number {
    const cutoff = now - IDEMPOTENCY_RETENTION_MS;
    // Raw SQL: Drizzle's delete has no LIMIT (SQLite's DELETE … LIMIT needs a compile option), and
    // a rowid subquery is what bounds the work.
    const result = this.db.$client
      .query(
        `DELETE FROM payment_idempotency_keys WHERE rowid IN (
           SELECT rowid FROM (SELECT rowid FROM payment_idempotency_keys WHERE claimed_at < ?1 LIMIT ${PRUNE_BATCH})
           UNION ALL
           SELECT rowid FROM (SELECT rowid FROM payment_idempotency_keys WHERE claimed_at > ?2 LIMIT ${PRUNE_BATCH}))`,
      )
      .run(cutoff, now + IDEMPOTENCY_RETENTION_MS);
    return result.changes;
  }
}
