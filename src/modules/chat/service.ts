/**
 * @module
 * Conversations, framework-free: one turn (ownership, context window, budget, the provider call,
 * storage, metrics), the owner's conversation list, and what privacy needs.
 *
 * A turn:
 * 1. `prepare`: a `conversationId` must be the owner's (else `not_found`, whoever owns it); the
 *    prompt is the system prompt, then the conversation's newest messages that fit in
 *    CHAT_CONTEXT_MESSAGES and CHAT_CONTEXT_TOKENS (estimated, oldest dropped first), then the new
 *    message. User text only ever goes in `user` messages, never into the system prompt. The
 *    prompt's estimate plus the provider's completion cap is reserved against the daily budget
 *    (budget.ts), in a transaction shared, a savepoint each, with the other turns' writes of the
 *    same event-loop turn (db/grouped-writes).
 * 2. `complete` or `stream`: the provider answers; the user's message and the reply are stored,
 *    and the reservation settled to the real usage, in one transaction (shared the same way); the
 *    answer waits for its commit. A stream that stops early
 *    (the client went away: its signal aborts the provider) stores what was received, marked
 *    incomplete. A turn aborted before any text (the client went away after the upstream was
 *    called) stores nothing and is charged its prompt's estimate and that of any reasoning the
 *    model streamed: the upstream was sent, and bills, the prompt. A failed call stores nothing
 *    (unless a stream had already sent text) and gives the reservation back, unless the upstream
 *    had generated reply or reasoning, which is charged; a turn aborted before the provider was
 *    called gives it back too.
 *
 * Every conversation and message is sealed as it is written (history-seal.ts). A turn continuing a
 * conversation whose row, or a message in the window the model will read, fails its seal is
 * refused as `not_found`; so is a page of messages (`page`) whose conversation row or messages fail
 * theirs, and the export leaves such a conversation out; the list, which shows no message, leaves
 * out one whose row fails. Each is reported once per process; none is resealed. Deleting and
 * erasing go by the owner columns.
 *
 * Upstream failures are logged with the request id and the provider's reason, never the text.
 */
import type { Database } from "bun:sqlite";
import { and, asc, desc, eq, gt, inArray, lt, or, type SQL, sql } from "drizzle-orm";
import { type Clock, DAY_MS } from "../../clock";
import type { Config } from "../../config";
import { isDatabaseBusy } from "../../db/busy";
import { drizzleOf } from "../../db/client";
import { type GroupedWrites, groupedWrites } from "../../db/grouped-writes";
import { IdSequenceError, spentIdsIn } from "../../db/id-sequence";
import { preparedOnUse } from "../../db/prepared-on-use";
import { CHAT_OWNER_KINDS, chatConversations, chatMessages, chatUsage } from "../../db/schema";
import { DELETE_PART_BYTES, idsWithinBytes } from "../../db/text-bounded";
import { encodeCursor, type ListCursor } from "../../list-cursor";
import type { Logger } from "../../logging/logger";
import type { AuditLog } from "../../plugins/audit/log";
import { StreamedJson } from "../privacy/contributor";
import { type ChatBudget, ownerRef, type Reservation } from "./budget";
import type { ChatOwner, ChatTurn, ChatTurnInput, ChatTurnOutcome, ChatTurns } from "./contract";
import {
  type ChatSeal,
  type ConversationTamperReport,
  type HistoryCheck,
  historyCheck,
} from "./history-seal";
import { defuseTemplateTokens } from "./message";
import { encodeMessageCursor } from "./message-cursor";
import type { ChatMetrics } from "./metrics";
import {
  AbortedMidReply,
  type ChatMessage,
  type ChatProvider,
  type TokenUsage,
  UnbilledAbort,
  UpstreamFailure,
} from "./providers/provider";
import {
  cursorableId,
  orderableTime,
  readableConversation,
  readableCount,
  readableMessages,
  type StoredConversation,
  shownUsage,
} from "./readable-columns";
import { estimatePromptTokens, estimateTokens, estimateTokensOf } from "./tokens";
import { WellFormedPieces } from "./well-formed-pieces";

/** Principals whose over-budget refusal today this process remembers having audited. */
const QUOTA_AUDITED_LIMIT = 10_000;

/** How many of `sizes`, from the first, fit within `bound` together: the first always. */
function howManyFit(sizes: readonly number[], bound: number): number {
  let fit = 0;
  for (let total = 0; fit < sizes.length; fit++) {
    total += sizes[fit]!;
    if (fit > 0 && total > bound) break;
  }
  return fit;
}

/**
 * The most message text one page of a conversation holds, in characters as its answer writes them
 * (JSON-escaped), past its newest message: the page is cut there and `nextCursor` goes on.
 */
export const PAGE_TEXT_BOUND = 1_000_000;

/** Rows retention deletes per table per run: bounded work every 10 s. */
export const RETENTION_BATCH = 1000;

/** What the HTTP edge adds to a turn for its audit event. */
export interface TurnMeta {
  ip?: string | null;
  route?: string | null;
}

export interface PreparedTurn {
  owner: ChatOwner;
  conversationId: string;
  isNew: boolean;
  message: string;
  /** What goes to the provider: system prompt, context, the new message. */
  prompt: ChatMessage[];
  /** The prompt's estimate (what an aborted turn is charged, and a usage-less stream's prompt). */
  promptEstimate: number;
  /** The prompt's estimate plus the provider's completion cap, held until the turn settles. */
  reservation: Reservation;
  requestId: string;
}

export type PrepareOutcome =
  | { kind: "ready"; turn: PreparedTurn }
  | Exclude<ChatTurnOutcome, { kind: "reply" } | { kind: "refused" }>;

/** What a streamed turn yields: text as it arrives, then the stored turn. */
export type TurnEvent = { kind: "text"; text: string } | { kind: "done"; turn: ChatTurn };

export interface ConversationSummary {
  id: string;
  createdAt: string;
  updatedAt: string;
  messageCount: number;
}

/** A page of one conversation's messages, oldest first, and the cursor to the older ones. */
export interface MessagePage extends ConversationSummary {
  messages: StoredMessage[];
  /** Names the page's oldest message; null when there is no older message. */
  nextCursor: string | null;
}

export interface StoredMessage {
  role: "user" | "assistant";
  content: string;
  incomplete: boolean;
  createdAt: string;
  usage: TokenUsage | null;
}

export interface ChatServiceOptions {
  sqlite: Database;
  provider: ChatProvider;
  chat: Config["chat"];
  retentionDays: number;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  metrics: ChatMetrics;
  budget: ChatBudget;
  /** Seals the conversations and messages written, and checks those read (history-seal.ts). */
  seal: ChatSeal;
  /** Hears of each conversation found failing its seal (once per process: the reporter's job). */
  reportTampered: ConversationTamperReport;
  /**
   * Whether an owner is still there to keep a conversation for (a user not erased, a key not
   * revoked); asked inside the storing transaction. Absent: every owner is.
   */
  ownerExists?: (owner: ChatOwner) => boolean;
  /** How long storing a turn waits out another connection's write lock; STORE_LOCK_WAIT_MS. */
  storeLockWaitMs?: number;
}

/**
 * How long storing a turn waits out another connection's write lock (the connection itself waits
 * 50 ms while serving, db/busy): by then the upstream has answered and billed the turn, and
 * giving up made it an error the client retried, or a WhatsApp message whose turn ran again at
 * the next claim, uncharged (probe 28d F2). Within the shutdown's 10 s drain.
 */
export const STORE_LOCK_WAIT_MS = 10_000;
const STORE_LOCK_RETRY_MS = 50;

/** 128 random bits, base64url (22 characters). */
export function newConversationId(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64url");
}

const iso = (ms: number) => new Date(ms).toISOString();

function isAbort(error: unknown, signal: AbortSignal | undefined): boolean {
  return (
    signal?.aborted === true ||
    (error instanceof Error && (error.name === "AbortError" || error.name === "TimeoutError"))
  );
}

/**
 * A conversation's message count as a write moves it on: from the row's own when it holds a
 * count, else from its messages counted (a cell written into the file that no count can be —
 * NULL, text, negative, fractional — would fail the turn's or retention's write, or become a
 * wrong count after one; probe 28c F2, F3). Qualified: the count is read inside a subquery on
 * `chat_messages`, whose own `id` an unqualified name would be.
 */
const KEPT_COUNT = sql.raw(`"chat_conversations"."message_count"`);
const HOLDS_A_COUNT = sql.raw(
  `(typeof("chat_conversations"."message_count") = 'integer' AND "chat_conversations"."message_count" >= 0)`,
);
const COUNTED = sql.raw(
  `(SELECT count(*) FROM "chat_messages" WHERE "chat_messages"."conversation_id" = "chat_conversations"."id")`,
);

/** A message of the context window as read (raw: see `recentMessages`). */
interface WindowRow {
  id: number;
  role: "user" | "assistant";
  content: string;
  incomplete: unknown;
  tokens: number;
  seal: string | null;
  previousSeal: string | null;
}

/** A message row as stored, read to be checked and then shown. */
type CheckedMessage = typeof chatMessages.$inferSelect;

/** Messages the export reads at a time: a page of text, not the conversation. */
const EXPORT_PAGE = 500;
/**
 * The text a page of the export's messages holds at most (one message past it is read alone): 500
 * replies of the longest a turn stores (131,072 characters at the default cap) were ~200 MB read at
 * once, and one export took a process from 78 to 922 MB (probe 85e F3).
 */
const EXPORT_PAGE_BYTES = 4 * 1024 * 1024;

/** A conversation's messages failed their seals or their chain while the export read them. */
class ChainBroken extends Error {
  constructor(conversationId: string) {
    super(`chat conversation ${conversationId} changed while it was exported`);
  }
}

/** Whose conversations `owner` holds: its own, and a key's those of the rest of its chain. */
function heldIds(owner: ChatOwner): readonly string[] {
  return owner.chain && owner.chain.length > 0 ? [owner.id, ...owner.chain] : [owner.id];
}

/** Every owner column pair the owners hold conversations under. */
function heldOwners(owners: readonly ChatOwner[]): { kind: string; id: string }[] {
  return owners.flatMap((owner) => heldIds(owner).map((id) => ({ kind: owner.kind, id })));
}

/** A conversation row as an erasure's reclaim reads it (service.ts `reclaimSealedTo`). */
export interface FailingConversation {
  /** Its rowid, as text. */
  at: string;
  id: string;
  ownerKind: string;
  ownerId: string;
  seal: string | null;
}

/** Messages a conversation's deletion takes at a time, and the pause between two (as an erasure's). */
const DELETE_PART = 1_000;
const DELETE_PART_PAUSE_MS = 20;

/** The conversations `owner` holds: the one predicate every owner-scoped query uses. */
function ownedBy(owner: ChatOwner) {
  const ids = heldIds(owner);
  return and(
    eq(chatConversations.ownerKind, owner.kind),
    ids.length === 1
      ? eq(chatConversations.ownerId, owner.id)
      : inArray(chatConversations.ownerId, [...ids]),
  );
}

/** Every column of `chat_messages` but its id: what a row's size is summed over. */
const MESSAGE_COLUMNS = [
  "conversation_id",
  "role",
  "content",
  "incomplete",
  "tokens",
  "prompt_tokens",
  "completion_tokens",
  "created_at",
  "seal",
  "previous_seal",
] as const;

export class ChatService implements ChatTurns {
  private readonly db;
  private readonly statements;
  private readonly check: HistoryCheck;
  private readonly writes: GroupedWrites;
  /** The turns being stored now (their upstream has answered and billed them), and their stores. */
  private readonly storing = new Map<PreparedTurn, Promise<void>>();
  /**
   * Principal → the UTC day its over-budget refusal was audited: once a day each, since the refusal
   * stands until midnight and a client retrying wrote a chained row per turn (probe 27f F1: 2,634
   * rows in 4 s from one key). `chat_requests_total{outcome="quota"}` counts every one.
   */
  private readonly quotaAudited = new Map<string, number>();

  constructor(private readonly options: ChatServiceOptions) {
    const db = drizzleOf(options.sqlite);
    this.db = db;
    this.check = historyCheck(options.seal);
    this.writes = groupedWrites(options.sqlite);
    this.statements = preparedOnUse({
      findConversation: () =>
        db
          .select({
            id: chatConversations.id,
            ownerKind: chatConversations.ownerKind,
            ownerId: chatConversations.ownerId,
            seal: chatConversations.seal,
            createdAt: chatConversations.createdAt,
            updatedAt: chatConversations.updatedAt,
          })
          .from(chatConversations)
          .where(eq(chatConversations.id, sql.placeholder("id")))
          .prepare(),
      // Raw: with the columns a seal check needs, drizzle's row mapping was half of this read,
      // the turn's largest (96 against 46 µs for a full 20-message window, measured in process).
      recentMessages: () =>
        options.sqlite.prepare<WindowRow, [string, number]>(
          `SELECT id, role, content, incomplete, tokens, seal, previous_seal AS previousSeal
           FROM chat_messages WHERE conversation_id = ? ORDER BY id DESC LIMIT ?`,
        ),
      // A conversation continued, touched as its turn reserves (prepare).
      touchAtStart: () =>
        options.sqlite.prepare<{ id: string }, [number, string]>(
          "UPDATE chat_conversations SET updated_at = max(updated_at, ?1) WHERE id = ?2 RETURNING id",
        ),
      // A turn's writes (store): prepared, not rebuilt and re-prepared by the query builder each
      // turn, which was a third of a turn's CPU.
      insertConversation: () =>
        db
          .insert(chatConversations)
          .values({
            id: sql.placeholder("id"),
            ownerKind: sql.placeholder("kind"),
            ownerId: sql.placeholder("owner"),
            createdAt: sql.placeholder("now"),
            updatedAt: sql.placeholder("now"),
            // The turn's two messages, stored with it.
            messageCount: 2,
            seal: sql.placeholder("seal"),
          })
          .prepare(),
      touchConversation: () =>
        db
          .update(chatConversations)
          .set({
            updatedAt: sql`${sql.placeholder("now")}`,
            messageCount: sql`CASE WHEN ${HOLDS_A_COUNT} THEN ${KEPT_COUNT} + 2 ELSE ${COUNTED} + 2 END`,
          })
          .where(eq(chatConversations.id, sql.placeholder("id")))
          .returning({ id: chatConversations.id })
          .prepare(),
      // The last message id SQLite has handed out (AUTOINCREMENT: never reused, so the higher of
      // its high-water mark and the largest id). Read inside the turn's immediate transaction,
      // which holds the write lock: the next two ids are this turn's, and each message is
      // inserted with its id and seal in one statement, as the audit log writes its rows
      // (plugins/audit/log.ts). RETURNING the ids and an UPDATE per message cost 20 µs a turn more
      // (measured in process; a turn is ~400 µs).
      lastMessageId: () =>
        options.sqlite.prepare<{ last: unknown; stored: string }, []>(
          `SELECT last, CAST(last AS TEXT) AS stored FROM (
             SELECT max(coalesce((SELECT CAST(seq AS INTEGER) FROM sqlite_sequence WHERE name = 'chat_messages'), 0),
               coalesce((SELECT max(id) FROM chat_messages), 0)) AS last)`,
        ),
      countMessages: () =>
        options.sqlite.prepare<{ count: number }, [string]>(
          "SELECT count(*) AS count FROM chat_messages WHERE conversation_id = ?",
        ),
      // The newest message's seal, which the turn's first message is chained to.
      lastSealOf: () =>
        options.sqlite.prepare<{ seal: string | null }, [string]>(
          "SELECT seal FROM chat_messages WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
        ),
      insertTurn: () =>
        db
          .insert(chatMessages)
          .values([
            {
              id: sql.placeholder("messageId"),
              conversationId: sql.placeholder("conversation"),
              role: "user",
              content: sql.placeholder("message"),
              tokens: sql.placeholder("messageTokens"),
              createdAt: sql.placeholder("now"),
              seal: sql.placeholder("messageSeal"),
              previousSeal: sql.placeholder("messagePrevious"),
            },
            {
              id: sql.placeholder("replyId"),
              conversationId: sql.placeholder("conversation"),
              role: "assistant",
              content: sql.placeholder("reply"),
              incomplete: sql.placeholder("incomplete"),
              tokens: sql.placeholder("replyTokens"),
              promptTokens: sql.placeholder("promptTokens"),
              completionTokens: sql.placeholder("completionTokens"),
              createdAt: sql.placeholder("now"),
              seal: sql.placeholder("replySeal"),
              previousSeal: sql.placeholder("messageSeal"),
            },
          ])
          .prepare(),
    });
  }

  private firstQuotaRefusalToday(actor: string, now: number): boolean {
    const day = Math.floor(now / DAY_MS);
    if (this.quotaAudited.get(actor) === day) return false;
    // Bounded: a day's flood of new principals forgets the earlier ones (each audited once more).
    if (this.quotaAudited.size >= QUOTA_AUDITED_LIMIT) this.quotaAudited.clear();
    this.quotaAudited.set(actor, day);
    return true;
  }

  get providerName(): string {
    return this.options.provider.name;
  }

  /** Counts a message the rules refused (the edge validates; the count is the chat's). */
  refusedInvalid(): void {
    this.options.metrics.request(this.options.provider.name, "invalid");
  }

  /**
   * Whether the owner holds this conversation, its row matching its seal (another's and none look
   * the same; one whose row fails is reported).
   */
  owns(owner: ChatOwner, conversationId: string): boolean {
    const row = this.statements.findConversation.get({ id: conversationId });
    if (row === undefined || row.ownerKind !== owner.kind) return false;
    if (!heldIds(owner).includes(row.ownerId)) return false;
    return this.intactConversation(row);
  }

  /**
   * Earlier messages that fit the context window, oldest first, with any chat template's control
   * token defused (message.ts); null when one of them does not match its seal (reported): the model
   * must not read a history Palisade did not write.
   */
  contextOf(conversationId: string): ChatMessage[] | null {
    const { contextMessages, contextTokens } = this.options.chat;
    if (contextMessages === 0) return [];
    // One more than the window: its oldest message is chained to the one written before it. Every
    // row read is checked before the window is cut on the token counts, which a row names itself.
    const newest = this.statements.recentMessages.all(conversationId, contextMessages + 1);
    const inOrder = newest.map((row) => ({
      ...row,
      conversationId,
      // Read as drizzle reads the column elsewhere (boolean mode): stored 1 is true.
      incomplete: Number(row.incomplete) === 1,
    }));
    if (!this.check.chain(inOrder.reverse())) {
      this.options.reportTampered(conversationId);
      return null;
    }
    const kept: ChatMessage[] = [];
    let tokens = 0;
    for (const row of newest.slice(0, contextMessages)) {
      if (tokens + row.tokens > contextTokens) break;
      tokens += row.tokens;
      kept.push({ role: row.role, content: defuseTemplateTokens(row.content) });
    }
    return kept.reverse();
  }

  /**
   * Whether a conversation's row matches its seal and its times are times (readable-columns.ts);
   * one that does not is reported.
   */
  private intactConversation(row: StoredConversation, bulk = false): boolean {
    if (this.check.conversation(row) && readableConversation(row)) return true;
    this.options.reportTampered(row.id, bulk);
    return false;
  }

  /**
   * The highest message id used; throws IdSequenceError when the ids cannot go on: Palisade's
   * count up from 1, and a mark past what JavaScript counts exactly (or not a number) was written
   * into the file; ids read back from it would not be the stored ones.
   */
  private lastWritableId(): number {
    const mark = this.statements.lastMessageId.get();
    const last = mark?.last;
    if (typeof last !== "number" || !Number.isSafeInteger(last + 2)) {
      // Named by what spends them: the sequence, or a row written at a larger id (58e F1).
      throw (
        spentIdsIn(this.options.sqlite, "chat_messages", "the chat messages'") ??
        new IdSequenceError("the chat messages'", mark?.stored ?? last)
      );
    }
    return last;
  }

  /**
   * Ownership, context and the budget reservation: everything before the provider is called. The
   * reservation is written with the other turns' writes of this event-loop turn.
   */
  async prepare(input: ChatTurnInput, meta: TurnMeta = {}): Promise<PrepareOutcome> {
    const { owner, message, requestId } = input;
    const { clock, budget, metrics, audit, provider } = this.options;
    let conversationId = input.conversationId;
    let context: ChatMessage[] = [];
    if (conversationId !== undefined) {
      // Not the owner's, or its row or a message the model would read fails its seal: the same.
      const history = this.owns(owner, conversationId) ? this.contextOf(conversationId) : null;
      if (history === null) {
        metrics.request(provider.name, "not_found");
        return { kind: "not_found" };
      }
      context = history;
    }
    const prompt: ChatMessage[] = [
      { role: "system", content: this.options.chat.systemPrompt },
      ...context,
      { role: "user", content: message },
    ];
    const promptEstimate = estimatePromptTokens(prompt);
    const tokens = promptEstimate + provider.maxCompletionTokens;
    const continued = conversationId;
    const reserved = await this.writes.run(() => {
      // Before the upstream is called (and bills the turn): a turn that could not be stored.
      this.lastWritableId();
      const now = clock.now();
      const outcome = budget.reserve(owner, tokens, now);
      // A conversation continued is touched with the reservation: retention takes an empty
      // conversation only once it is untouched for the retention, so one whose messages all
      // expire during the turn is still there when the turn stores. Without it, retention could
      // delete it under the turn, which answered a conversation that no longer existed, its
      // messages lost (probes 31d F2, 31e F1, F2). Gone already (between the ownership check and
      // this write), the turn is refused before the provider is called, its reservation given back.
      if (outcome.kind !== "reserved" || continued === undefined) return outcome;
      if (this.statements.touchAtStart.get(now, continued) !== null) return outcome;
      budget.release(outcome.reservation, now);
      return { kind: "conversation_gone" } as const;
    });
    if (reserved.kind === "conversation_gone") {
      metrics.request(provider.name, "not_found");
      return { kind: "not_found" };
    }
    if (reserved.kind === "owner_gone") {
      metrics.request(provider.name, "owner_gone");
      return reserved;
    }
    if (reserved.kind === "too_many_turns") {
      metrics.request(provider.name, "concurrent");
      return reserved;
    }
    if (reserved.kind === "over_budget") {
      metrics.request(provider.name, "quota");
      const actor = ownerRef(owner);
      if (this.firstQuotaRefusalToday(actor, clock.now())) {
        audit.record({
          type: "chat.quota_exceeded",
          outcome: "denied",
          actor,
          ip: meta.ip ?? null,
          route: meta.route ?? null,
          requestId,
          detail: { budget: budget.dailyTokens },
        });
      }
      return reserved;
    }
    const isNew = conversationId === undefined;
    conversationId ??= newConversationId();
    return {
      kind: "ready",
      turn: {
        owner,
        conversationId,
        isNew,
        message,
        prompt,
        promptEstimate,
        reservation: reserved.reservation,
        requestId,
      },
    };
  }

  /** One turn, answered whole: what the WhatsApp webhook calls. */
  async converse(input: ChatTurnInput, meta: TurnMeta = {}): Promise<ChatTurnOutcome> {
    const prepared = await this.prepare(input, meta);
    if (prepared.kind !== "ready") return prepared;
    try {
      return { kind: "reply", turn: await this.complete(prepared.turn, input.signal) };
    } catch (error) {
      // Not a failure to retry: the same text is refused again (its reservation is released). A
      // refusal of its size or a setting (413, 422, a context too long) is thrown as any failure:
      // it may be the deployment's, mended within the caller's retries (probe 58c F3).
      if (error instanceof UpstreamFailure && error.kind === "refused" && error.ofContent) {
        return { kind: "refused" };
      }
      throw error;
    }
  }

  async complete(turn: PreparedTurn, signal?: AbortSignal): Promise<ChatTurn> {
    const { provider } = this.options;
    const sent = signal?.aborted !== true;
    let completion: Awaited<ReturnType<ChatProvider["complete"]>>;
    try {
      completion = await provider.complete(turn.prompt, {
        signal,
        requestId: turn.requestId,
        caller: callerOf(turn),
      });
    } catch (error) {
      await this.failed(turn, error, signal, sent);
      throw error;
    }
    // The reply as stored and sealed: SQLite keeps a lone surrogate as U+FFFD, so stored as sent
    // it no longer matched its seal and the conversation read as tampered (probe 37b F1).
    const reply = completion.text.toWellFormed();
    // A reply the upstream's content filter cut part-way is stored as cut short (probe 69b F3).
    await this.store(turn, reply, completion.usage, completion.cut === true);
    return { conversationId: turn.conversationId, reply, usage: completion.usage };
  }

  /**
   * Streams one turn: text as the provider sends it, then the stored turn. Stopping the iteration
   * (the client went away) or an aborted signal stores what was received, marked incomplete.
   */
  async *stream(turn: PreparedTurn, signal?: AbortSignal): AsyncGenerator<TurnEvent> {
    const { provider } = this.options;
    // Aborted before the upstream was called: nothing was sent, nothing is owed.
    const sent = signal?.aborted !== true;
    let text = "";
    // What the consumer was handed: a reply cut short is stored as far as this (below).
    let handed = "";
    // The model's reasoning received, counted and never kept: billed with what was handed.
    let reasoning = 0;
    let usage: TokenUsage | null = null;
    // The upstream's content filter ended the reply part-way: stored as cut short (probe 69b F3).
    let cut = false;
    let finished = false;
    let failure: unknown = null;
    // The pieces as the stored reply reads (well-formed, below): a lone surrogate is U+FFFD, and a
    // high surrogate ending a piece waits for the next, which may hold its pair (probe 43b note:
    // the client was sent `\ud800` where the stored reply and the JSON answer hold U+FFFD).
    const wellFormed = new WellFormedPieces();
    try {
      for await (const delta of provider.stream(turn.prompt, {
        signal,
        requestId: turn.requestId,
        caller: callerOf(turn),
      })) {
        // A provider that does not watch its signal is not read past the abort.
        if (signal?.aborted) break;
        if (delta.kind === "usage") {
          usage = delta.usage;
          cut = delta.cut === true;
          continue;
        }
        if (delta.kind === "reasoning") {
          reasoning += delta.characters;
          continue;
        }
        text += delta.text;
        const piece = wellFormed.next(delta.text);
        if (piece !== "") {
          handed += piece;
          yield { kind: "text", text: piece };
        }
      }
      const rest = wellFormed.end();
      if (rest !== "" && !signal?.aborted) {
        handed += rest;
        yield { kind: "text", text: rest };
      }
      finished = !signal?.aborted;
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      // A complete reply is stored and returned well-formed; whole, not per delta, so a pair split
      // across two deltas stays one character. One cut short is stored as far as it was handed
      // on: a high surrogate held back for its pair was never sent, and stored as U+FFFD it made
      // the history differ from what the client read, or, alone, a conversation the client was
      // told failed (probe 54a F3).
      text = finished ? text.toWellFormed() : handed;
      if (finished) {
        const used = usage ?? this.estimatedUsage(turn, text.length + reasoning);
        await this.store(turn, text, used, cut);
      } else if (text !== "") {
        // Cut short after some text: keep what was received, counted by estimate.
        const used = usage ?? this.estimatedUsage(turn, text.length + reasoning);
        await this.store(turn, text, used, true);
        if (failure !== null && !isAbort(failure, signal)) this.logFailure(turn, failure);
      } else {
        await this.failed(turn, failure, signal, sent, reasoning);
      }
    }
    const stored = usage ?? this.estimatedUsage(turn, text.length + reasoning);
    yield {
      kind: "done",
      turn: { conversationId: turn.conversationId, reply: text, usage: stored },
    };
  }

  /**
   * The usage of `generated` characters (of reply and reasoning) no upstream counted: one token per
   * four characters, never past the provider's completion cap, as a counted reply is not. A stream
   * cut short (at the kept-text bound, by the upstream, by the client) was stored and counted by its
   * length alone: 16,384 tokens against a cap of 200 (probe 34a F1).
   */
  private estimatedUsage(turn: PreparedTurn, generated: number): TokenUsage {
    return {
      promptTokens: turn.promptEstimate,
      completionTokens: Math.min(
        estimateTokensOf(generated),
        this.options.provider.maxCompletionTokens,
      ),
    };
  }

  /**
   * A call that stored nothing. Aborted after the upstream was sent the prompt (the client went
   * away, however early): the prompt's estimate is charged, since the upstream bills it. Failed
   * or aborted once the upstream had opened its answer (the error's `billedCharacters`, or the
   * `reasoning` a stream that handed no text counted before its caller left): the prompt and what
   * it generated are charged. Failed otherwise, or aborted before the call: the reservation is
   * given back. Counted, and logged why.
   */
  private async failed(
    turn: PreparedTurn,
    error: unknown,
    signal: AbortSignal | undefined,
    sent: boolean,
    reasoning = 0,
  ) {
    const { metrics, provider } = this.options;
    // What the upstream generated (and bills) before the turn failed or its caller left: charged,
    // never stored, since the client is told the turn failed (probes 69b F2, 69e F1, 69f F2, 70a).
    const carried =
      error instanceof AbortedMidReply || error instanceof UpstreamFailure
        ? await error.billedCharacters
        : undefined;
    const billed = carried ?? (reasoning > 0 ? reasoning : undefined);
    if (error === null || isAbort(error, signal)) {
      // The upstream was sent the prompt, unless every attempt was refused before the caller left.
      if (billed !== undefined || (sent && !(error instanceof UnbilledAbort))) {
        await this.charge(turn, billed ?? 0);
      } else await this.endReservation(turn, null);
      metrics.request(provider.name, "incomplete");
      return;
    }
    if (billed !== undefined) await this.charge(turn, billed);
    else await this.endReservation(turn, null);
    metrics.request(provider.name, error instanceof UpstreamFailure ? "upstream_error" : "error");
    this.logFailure(turn, error);
  }

  /**
   * Settles a turn that stored nothing to its prompt's estimate and that of the `generated`
   * characters, and counts it.
   */
  private async charge(turn: PreparedTurn, generated: number) {
    const billed = this.estimatedUsage(turn, generated);
    await this.endReservation(turn, billed.promptTokens + billed.completionTokens);
    this.options.metrics.tokens(billed.promptTokens, billed.completionTokens);
  }

  /**
   * Settles a turn's reservation to `charged` tokens, or gives it back (null), outside the turn's
   * storing: with the other turns' writes of this event-loop turn, so that the turns a lock failed
   * together wait for it once, not once each. Should that fail too, the reservation is left to
   * the next maintenance run, which gives it back; the turn's own outcome stands.
   */
  private async endReservation(turn: PreparedTurn, charged: number | null): Promise<void> {
    const { budget, clock } = this.options;
    try {
      await this.writes.run(() =>
        charged === null
          ? budget.release(turn.reservation, clock.now())
          : budget.settle(turn.reservation, charged, clock.now()),
      );
    } catch {
      budget.abandon(turn.reservation);
    }
  }

  /** A turn whose answer was produced (and billed) but not stored: said, with why. */
  private logNotStored(turn: PreparedTurn, error: unknown) {
    const { logger } = this.options;
    const fields = { requestId: turn.requestId, conversationId: turn.conversationId };
    if (isDatabaseBusy(error)) logger.warn(fields, "chat turn not stored: the database is locked");
    else logger.error({ ...fields, err: error }, "chat turn not stored");
  }

  private logFailure(turn: PreparedTurn, error: unknown) {
    const { logger, provider } = this.options;
    if (error instanceof UpstreamFailure && !error.logged) {
      logger.warn(
        {
          requestId: turn.requestId,
          provider: provider.name,
          kind: error.kind,
          reason: error.reason,
        },
        "chat upstream failed",
      );
    }
  }

  /**
   * Runs `write` in the next group's transaction, again (every STORE_LOCK_RETRY_MS) while another
   * connection's write lock refuses the group, for up to the store's wait. A refused group kept
   * nothing, so running it again writes each row once.
   */
  private async outlastLock(write: () => void): Promise<void> {
    const until = performance.now() + (this.options.storeLockWaitMs ?? STORE_LOCK_WAIT_MS);
    for (;;) {
      try {
        return await this.writes.run(write);
      } catch (error) {
        if (!isDatabaseBusy(error) || performance.now() >= until) throw error;
        await Bun.sleep(STORE_LOCK_RETRY_MS);
      }
    }
  }

  /** Whether the turn's upstream has answered and its storing is under way. */
  isStoring(turn: PreparedTurn): boolean {
    return this.storing.has(turn);
  }

  /**
   * Resolves once every turn being stored has been stored or has failed to be, each within its
   * wait for a lock (STORE_LOCK_WAIT_MS): the shutdown waits for them before it closes the
   * connections and the database (probe 28e F1: a turn the upstream had billed was cut there,
   * neither stored nor charged, and its client told to send it again).
   */
  async storesSettled(): Promise<void> {
    while (this.storing.size > 0) await Promise.allSettled([...this.storing.values()]);
  }

  /** Stores the turn (storeTurn), known as being stored until that settles (storesSettled). */
  private async store(turn: PreparedTurn, reply: string, usage: TokenUsage, incomplete: boolean) {
    const storing = this.storeTurn(turn, reply, usage, incomplete);
    this.storing.set(turn, storing);
    try {
      await storing;
    } finally {
      this.storing.delete(turn);
    }
  }

  /**
   * The user's message and the reply, the conversation's time and the usage: one transaction, or
   * one savepoint of the transaction the turns ending in the same event-loop turn share
   * (db/grouped-writes). Settles once they are committed.
   */
  private async storeTurn(
    turn: PreparedTurn,
    reply: string,
    usage: TokenUsage,
    incomplete: boolean,
  ) {
    const { clock, budget, metrics, provider, seal } = this.options;
    const now = clock.now();
    const { insertConversation, touchConversation, lastSealOf, insertTurn } = this.statements;
    const charge = usage.promptTokens + usage.completionTokens;
    try {
      await this.outlastLock(() => {
        // Erased (or its key revoked) while the turn ran: the erasure came first and found
        // nothing of this turn to delete, so nothing of it is kept, in a new conversation or an
        // old one; the usage counts.
        if (this.options.ownerExists?.(turn.owner) === false) {
          budget.settle(turn.reservation, charge, now);
          return;
        }
        if (turn.isNew) {
          const conversation = {
            id: turn.conversationId,
            ownerKind: turn.owner.kind,
            ownerId: turn.owner.id,
          };
          const conversationSeal = seal.conversation(conversation);
          insertConversation.run({
            id: conversation.id,
            kind: conversation.ownerKind,
            owner: conversation.ownerId,
            now,
            seal: conversationSeal,
          });
          this.check.rememberConversation({ ...conversation, seal: conversationSeal });
        } else {
          const kept = touchConversation.get({ id: turn.conversationId, now });
          // Deleted while the turn ran: the reply was given, nothing is kept; the usage counts.
          if (!kept) {
            budget.settle(turn.reservation, charge, now);
            return;
          }
        }
        const last = this.lastWritableId();
        // Chained to the conversation's newest message (none for a new conversation), in this
        // transaction: the next message written there is chained to these.
        const previous = turn.isNew ? null : (lastSealOf.get(turn.conversationId)?.seal ?? null);
        const message = {
          id: last + 1,
          conversationId: turn.conversationId,
          previousSeal: previous,
          role: "user",
          content: turn.message,
          incomplete: false,
          tokens: estimateTokens(turn.message),
        };
        const messageSeal = seal.message(message);
        const answer = {
          id: last + 2,
          conversationId: turn.conversationId,
          previousSeal: messageSeal,
          role: "assistant",
          content: reply,
          incomplete,
          tokens: estimateTokens(reply),
        };
        const replySeal = seal.message(answer);
        insertTurn.run({
          messageId: message.id,
          replyId: answer.id,
          messageSeal,
          replySeal,
          messagePrevious: previous,
          conversation: turn.conversationId,
          message: turn.message,
          messageTokens: message.tokens,
          reply,
          incomplete: incomplete ? 1 : 0,
          replyTokens: answer.tokens,
          promptTokens: usage.promptTokens,
          completionTokens: usage.completionTokens,
          now,
        });
        this.check.remember({ ...message, seal: messageSeal });
        this.check.remember({ ...answer, seal: replySeal });
        budget.settle(turn.reservation, charge, now);
      });
    } catch (error) {
      // Not stored (a locked or full disk, a file whose ids were tampered with): the usage is
      // still charged, since the upstream billed it.
      this.logNotStored(turn, error);
      await this.endReservation(turn, charge);
      throw error;
    }
    metrics.request(provider.name, incomplete ? "incomplete" : "ok");
    metrics.tokens(usage.promptTokens, usage.completionTokens);
    const reported = usage.promptTokens + usage.completionTokens;
    if (reported > turn.reservation.tokens) {
      // The budget was charged the reservation (budget.settle): say by how much it undercounts.
      this.options.logger.warn(
        {
          requestId: turn.requestId,
          provider: provider.name,
          reserved: turn.reservation.tokens,
          reported,
        },
        "chat usage passed its reservation; the budget counts the reservation",
      );
    }
  }

  /** The owner's conversations, newest first, `limit` at a time. */
  list(
    owner: ChatOwner,
    page: { cursor?: ListCursor; limit: number },
  ): { conversations: ConversationSummary[]; nextCursor: string | null } {
    const { cursor, limit } = page;
    const rows = this.db
      .select({
        id: chatConversations.id,
        ownerKind: chatConversations.ownerKind,
        ownerId: chatConversations.ownerId,
        seal: chatConversations.seal,
        createdAt: chatConversations.createdAt,
        updatedAt: chatConversations.updatedAt,
        messageCount: chatConversations.messageCount,
      })
      .from(chatConversations)
      .where(
        and(
          ownedBy(owner),
          orderableTime(chatConversations.createdAt),
          cursorableId(chatConversations.id),
          cursor
            ? or(
                lt(chatConversations.createdAt, cursor.createdAt),
                and(
                  eq(chatConversations.createdAt, cursor.createdAt),
                  lt(chatConversations.id, cursor.id),
                ),
              )
            : undefined,
        ),
      )
      .orderBy(desc(chatConversations.createdAt), desc(chatConversations.id))
      .limit(limit + 1)
      .all();
    const read = rows.slice(0, limit);
    // The cursor follows the page as read, so one left out is not read again on the next page.
    const last = read.at(-1);
    // The list shows no message, so only each row's seal (its id and owner) is checked, and the
    // count is the row's: reading every message of a page of long conversations to check their
    // chains cost megabytes a request, counting them milliseconds (probes 27f F2, 28a F1). A
    // message tampered with is refused where it would be shown: on its page, a turn, the export.
    const shown = read.filter((row) => this.intactConversation(row, true));
    return {
      conversations: shown.map((row) => ({
        id: row.id,
        createdAt: iso(row.createdAt),
        updatedAt: iso(row.updatedAt),
        messageCount: this.countOf(row),
      })),
      nextCursor: rows.length > limit && last ? encodeCursor(last.createdAt, last.id) : null,
    };
  }

  /**
   * A page of one of the owner's conversations: its newest `limit` messages older than the message
   * `before` names (the newest when absent), oldest first; null when it is not the owner's, or its
   * row or a message of the page fails its seal (reported). The page is checked as a turn checks
   * its window: every message read, and the one before the page for the chain (so pages read one
   * after another check every link); a message on another page is checked when that is read.
   */
  page(
    owner: ChatOwner,
    conversationId: string,
    page: { before?: number; limit: number },
  ): MessagePage | null {
    const { before, limit } = page;
    // One snapshot: a conversation deleted or continued by another process between the reads
    // would otherwise show its row with none of its messages, or a count of other messages.
    const read = this.db.transaction((tx) => {
      const conversation = tx
        .select()
        .from(chatConversations)
        .where(and(eq(chatConversations.id, conversationId), ownedBy(owner)))
        .get();
      if (!conversation) return null;
      const onPage = and(
        eq(chatMessages.conversationId, conversationId),
        before === undefined ? undefined : lt(chatMessages.id, before),
      );
      // As many of the newest as fit in PAGE_TEXT_BOUND as the answer writes them (JSON-escaped:
      // a control character is six), the newest always: a reply is kept up to ~131,000
      // characters, and a page of 100 replies of control characters was 19.5 MB (probe 89f F1).
      const sizes = tx
        // Text only: json_quote refuses a BLOB, which the checks below report as written into the file.
        .select({
          size: sql<number>`CASE WHEN typeof(${chatMessages.content}) = 'text' THEN length(json_quote(${chatMessages.content})) ELSE 0 END`,
        })
        .from(chatMessages)
        .where(onPage)
        .orderBy(desc(chatMessages.id))
        .limit(limit)
        .all();
      const fit = howManyFit(
        sizes.map((row) => Number(row.size) || 0),
        PAGE_TEXT_BOUND,
      );
      // One more than the page: the message before it, which its oldest is chained to.
      const newest = tx
        .select()
        .from(chatMessages)
        .where(onPage)
        .orderBy(desc(chatMessages.id))
        .limit(fit + 1)
        .all();
      return { conversation, inOrder: newest.reverse(), fit };
    });
    if (!read || !this.intactConversation(read.conversation)) return null;
    const { conversation, inOrder, fit } = read;
    if (!this.check.chain(inOrder) || !readableMessages(inOrder)) {
      this.options.reportTampered(conversationId);
      return null;
    }
    const shown = inOrder.length > fit ? inOrder.slice(1) : inOrder;
    const oldest = shown[0];
    return {
      id: conversation.id,
      createdAt: iso(conversation.createdAt),
      updatedAt: iso(conversation.updatedAt),
      messageCount: this.countOf(conversation),
      messages: this.shownMessages(shown),
      nextCursor: inOrder.length > fit && oldest ? encodeMessageCursor(oldest.id) : null,
    };
  }

  /**
   * A conversation's message count as its row keeps it; counted when the row holds what no count
   * can be (written into the file: the column is not sealed), so one such row does not fail the
   * answer that shows it (probe 28b F2).
   */
  private countOf(row: { id: string; messageCount: unknown }): number {
    const kept = row.messageCount;
    if (typeof kept === "number" && Number.isSafeInteger(kept) && kept >= 0) return kept;
    return this.statements.countMessages.get(row.id)?.count ?? 0;
  }

  /**
   * Counts every conversation's messages again and corrects the rows whose count differs; how many
   * it corrected. One statement over the messages' index, as migration 0025's; a row is counted
   * twice only where it is corrected.
   */
  recountMessages(): number {
    return this.db
      .update(chatConversations)
      .set({ messageCount: COUNTED })
      .where(sql`${KEPT_COUNT} IS NOT ${COUNTED}`)
      .returning({ id: chatConversations.id })
      .all().length;
  }

  /**
   * Deletes one of the owner's conversations and its messages; false if none. A long one's messages
   * go first, the oldest a part at a time with a pause between two (a prefix: what is left still
   * verifies, as after a retention run), then the row with what is left: one statement's cascade
   * held the event loop and the write lock ~24 µs a message, 1.1 s for 50,000 (probe 84h F2).
   * Turns written meanwhile are taken too; the parts are bounded as an erasure's are, the row's
   * cascade taking whatever is left past them.
   */
  async delete(owner: ChatOwner, conversationId: string): Promise<boolean> {
    const conversation = sql`(SELECT ${chatConversations.id} FROM ${chatConversations}
      WHERE ${and(eq(chatConversations.id, conversationId), ownedBy(owner))})`;
    const held = this.db
      .select({
        rows: sql<number>`count(*)`,
        bytes: sql<number>`coalesce(sum(octet_length(${chatMessages.content})), 0)`,
      })
      .from(chatMessages)
      .where(sql`${chatMessages.conversationId} = ${conversation}`)
      .get() ?? { rows: 0, bytes: 0 };
    // The row goes last, with what is left of its messages (ON DELETE CASCADE): at most a part.
    const left = { rows: Number(held.rows), bytes: Number(held.bytes) };
    const partsAllowed =
      2 * (Math.ceil(left.rows / DELETE_PART) + Math.ceil(left.bytes / DELETE_PART_BYTES)) + 2;
    for (
      let part = 0;
      (left.rows > DELETE_PART || left.bytes > DELETE_PART_BYTES) && part < partsAllowed;
      part++
    ) {
      const gone = this.deleteMessages(
        sql`SELECT ${chatMessages.id} FROM ${chatMessages}
          WHERE ${chatMessages.conversationId} = ${conversation}
          ORDER BY ${chatMessages.id} LIMIT ${DELETE_PART}`,
      );
      if (gone.rows === 0) break;
      left.rows -= gone.rows;
      left.bytes -= gone.bytes;
      await Bun.sleep(DELETE_PART_PAUSE_MS);
    }
    const deleted = this.db
      .delete(chatConversations)
      .where(and(eq(chatConversations.id, conversationId), ownedBy(owner)))
      .returning({ id: chatConversations.id })
      .all();
    return deleted.length > 0;
  }

  /** Messages as shown (the export's and GET's shape), from rows already checked. */
  private shownMessages(messages: readonly CheckedMessage[]): StoredMessage[] {
    return messages.map((row) => ({
      role: row.role,
      content: row.content,
      incomplete: row.incomplete,
      createdAt: iso(row.createdAt),
      usage: shownUsage(row),
    }));
  }

  /**
   * The owners' conversations, oldest first, EXPORT_PAGE at a time: 100,000 of them read at once
   * held the event loop for a quarter of a second at the start of the export's chat part (probe
   * 39a F1).
   */
  private *conversationsOf(owners: readonly ChatOwner[]) {
    if (owners.length === 0) return;
    // One term a kind, its ids in a list: a term an owner made SQLite's expression tree too deep
    // for a user with a thousand keys, and the export was cut (probe 40a F1).
    const idsByKind = new Map<ChatOwner["kind"], string[]>();
    for (const owner of owners) {
      const ids = idsByKind.get(owner.kind) ?? [];
      ids.push(...heldIds(owner));
      idsByKind.set(owner.kind, ids);
    }
    const ofOwners = or(
      ...[...idsByKind].map(([kind, ids]) =>
        and(eq(chatConversations.ownerKind, kind), inArray(chatConversations.ownerId, ids)),
      ),
    );
    // Paged only through rows a page can be cut after, as the list reads them: one whose id reads
    // back as another (bytes that are no UTF-8 read as U+FFFD, which sorts before the ids after it)
    // gave the same page for ever, and the export answered 200 and sent nothing while it spun
    // (probe 60b F2). The others (none Palisade wrote) come after, up to a page, to be checked and
    // reported as tampered.
    const pageable = and(
      orderableTime(chatConversations.createdAt),
      cursorableId(chatConversations.id),
    );
    const owned = and(ofOwners, pageable);
    const columns = {
      id: chatConversations.id,
      ownerKind: chatConversations.ownerKind,
      ownerId: chatConversations.ownerId,
      createdAt: chatConversations.createdAt,
    };
    let after: { createdAt: number; id: string } | undefined;
    for (;;) {
      const page = this.db
        .select(columns)
        .from(chatConversations)
        .where(
          after === undefined
            ? owned
            : and(
                owned,
                or(
                  gt(chatConversations.createdAt, after.createdAt),
                  and(
                    eq(chatConversations.createdAt, after.createdAt),
                    gt(chatConversations.id, after.id),
                  ),
                ),
              ),
        )
        .orderBy(asc(chatConversations.createdAt), asc(chatConversations.id))
        .limit(EXPORT_PAGE)
        .all();
      yield* page;
      if (page.length < EXPORT_PAGE) break;
      after = page.at(-1)!;
    }
    yield* this.db
      .select(columns)
      .from(chatConversations)
      .where(and(ofOwners, sql`NOT ${pageable}`))
      .limit(EXPORT_PAGE)
      .all();
  }

  /**
   * Every conversation (with its messages) and usage row of these owners: the export's part, as
   * JSON text read a page of messages at a time (a year of a busy sender's chat does not fit in
   * memory as objects). A conversation is read twice: once to check its row and every message's
   * seal and link (one that fails is left out and reported, as from the list), then again as it is
   * written, each page checked with the message before it; a change found in that second read
   * (written into the file between the two) throws, and the export is cut there. A conversation is
   * read again when its turn comes: one deleted meanwhile (by its owner, retention or an erasure)
   * is left out, not written with no messages (probe 38b F4). An empty piece marks a point where
   * the work so far is done (a conversation's row or a page checked): the reader may let other
   * requests in there, so a long history never holds the event loop (probe 38b F1).
   */
  exportOf(owners: readonly ChatOwner[]): StreamedJson {
    return new StreamedJson(() => this.exportPieces(owners));
  }

  private *exportPieces(owners: readonly ChatOwner[]): Generator<string> {
    const listed = this.conversationsOf(owners);
    let separator = "";
    yield '{"conversations":[';
    for (const { id, ownerKind, ownerId } of listed) {
      yield "";
      const row = this.db
        .select()
        .from(chatConversations)
        .where(eq(chatConversations.id, id))
        .get();
      if (row === undefined || row.ownerKind !== ownerKind || row.ownerId !== ownerId) continue;
      if (!this.intactConversation(row, true)) continue;
      if (!(yield* this.chainChecked(row.id))) {
        this.options.reportTampered(row.id, true);
        continue;
      }
      // Deleted while its messages were checked (other requests run between their pages): left
      // out too (probe 39a F4).
      if (!this.statements.findConversation.get({ id: row.id })) continue;
      const head = JSON.stringify({
        id: row.id,
        owner: `${row.ownerKind}:${row.ownerId}`,
        createdAt: iso(row.createdAt),
        updatedAt: iso(row.updatedAt),
      });
      yield `${separator}${head.slice(0, -1)},"messages":[`;
      separator = ",";
      let comma = "";
      try {
        for (const page of this.checkedPages(row.id)) {
          if (page.length === 0) continue;
          yield comma +
            this.shownMessages(page)
              .map((message) => JSON.stringify(message))
              .join(",");
          comma = ",";
        }
      } catch (error) {
        // Audited as any other read that finds it (probe 29b F3); the export is cut by the throw.
        if (error instanceof ChainBroken) this.options.reportTampered(row.id, true);
        throw error;
      }
      yield "]}";
    }
    yield `],"usage":${JSON.stringify(this.usageOf(owners))}}`;
  }

  /**
   * Whether every message of the conversation matches its seal and is chained to the one before;
   * an empty piece after each page checked (exportPieces).
   */
  private *chainChecked(conversationId: string): Generator<string, boolean> {
    try {
      for (const _page of this.checkedPages(conversationId)) yield "";
      return true;
    } catch (error) {
      if (error instanceof ChainBroken) return false;
      throw error;
    }
  }

  /**
   * A conversation's messages, oldest first, EXPORT_PAGE at a time; each page checked with the
   * last message of the page before (ChainBroken when it fails). Reads by id, never holding a
   * transaction between pages: a slow reader of the export must not hold back the WAL. Retention
   * may delete the oldest messages meanwhile, past the page read last (probe 29b F1): a page whose
   * first message is now the oldest the conversation has is checked as the oldest message read
   * always is, without the link to a message before it.
   */
  private *checkedPages(conversationId: string): Generator<CheckedMessage[]> {
    let before: CheckedMessage | undefined;
    for (;;) {
      const next = and(
        eq(chatMessages.conversationId, conversationId),
        before === undefined ? undefined : gt(chatMessages.id, before.id),
      );
      // How long each of the next messages is, read from the rows' headers, not their text; the
      // page is as many as fit EXPORT_PAGE_BYTES. Both reads in one snapshot (a read transaction,
      // ended with them), so another process's deletion between them cannot shorten the page.
      const { fits, more, page } = this.db.transaction(
        (tx) => {
          const sizes = tx
            .select({ bytes: sql<number | null>`octet_length(${chatMessages.content})` })
            .from(chatMessages)
            .where(next)
            .orderBy(asc(chatMessages.id))
            .limit(EXPORT_PAGE)
            .all();
          const fits = howManyFit(
            sizes.map((row) => Number(row.bytes ?? 0)),
            EXPORT_PAGE_BYTES,
          );
          const page = tx
            .select()
            .from(chatMessages)
            .where(next)
            .orderBy(asc(chatMessages.id))
            .limit(Math.max(fits, 1))
            .all();
          return { fits, more: fits < sizes.length || sizes.length === EXPORT_PAGE, page };
        },
        { behavior: "deferred" },
      );
      const holds =
        before === undefined
          ? this.check.chain(page)
          : this.check.chain([before, ...page]) ||
            (this.isOldest(page[0]) && this.check.chain(page));
      if (!holds || !readableMessages(page)) throw new ChainBroken(conversationId);
      yield page;
      if (!more || page.length < fits) return;
      before = page[page.length - 1];
    }
  }

  /** Whether no message of its conversation older than this one is stored (retention took them). */
  private isOldest(message: CheckedMessage | undefined): boolean {
    if (message === undefined) return false;
    const older = this.db
      .select({ id: chatMessages.id })
      .from(chatMessages)
      .where(
        and(
          eq(chatMessages.conversationId, message.conversationId),
          lt(chatMessages.id, message.id),
        ),
      )
      .limit(1)
      .get();
    return older === undefined;
  }

  private usageOf(owners: readonly ChatOwner[]) {
    return owners.flatMap((owner) =>
      this.db
        .select()
        .from(chatUsage)
        .where(and(eq(chatUsage.ownerKind, owner.kind), eq(chatUsage.ownerId, owner.id)))
        .orderBy(asc(chatUsage.day))
        .all()
        .map((row) => ({
          principal: `${row.ownerKind}:${row.ownerId}`,
          day: row.day,
          usedTokens: readableCount(row.usedTokens) ? row.usedTokens : null,
          requests: readableCount(row.requests) ? row.requests : null,
        })),
    );
  }

  /**
   * Deletes every conversation, message, usage row and reservation of these owners (inside the
   * erasure). A turn in flight then settles against nothing: its usage row and reservation are gone.
   */
  /**
   * Whether the file holds messages whose conversation it does not hold: put back without it (a
   * backup's rows copied in with foreign keys off; probe 93c F3). No one can read them.
   */
  holdsUnownedMessages(): boolean {
    return (
      this.options.sqlite
        .query<{ found: number }, []>(
          `SELECT EXISTS (SELECT 1 FROM chat_messages AS m WHERE NOT EXISTS
             (SELECT 1 FROM chat_conversations AS c WHERE c.id = m.conversation_id)) AS found`,
        )
        .get()?.found === 1
    );
  }

  /**
   * Deletes the messages of no conversation among the `window` messages after the id `after`
   * (null: from the first), in an immediate transaction: bounded work each, whatever the file
   * holds. Ids are carried as SQL writes them (a forged one past 2^53 reads rounded as a number).
   * The id to go on after, or null once past the last message; and how many went.
   */
  deleteUnownedMessages(
    after: string | null,
    window: number,
  ): { next: string | null; rows: number } {
    const { sqlite } = this.options;
    // From the first id SQLite allows, that one included (probe 93e F4: `>` it never left).
    const from = after ?? "-9223372036854775808";
    const past = after === null ? ">=" : ">";
    // The window's end, read before the write lock: up to `window` messages and DELETE_PART_BYTES
    // of every column (a row written into the file may hold a value of any size in any of them),
    // the first whatever its size (probe 93g F4: 250 messages of 1 MB each
    // held the lock 1.6 s, secure delete zeroing every page; 93h F4: a large seal, not counted).
    const last = sqlite
      .query<{ last: string | null }, [string, number, number]>(
        `SELECT CAST(max(id) AS TEXT) AS last FROM (
           SELECT id, row_number() OVER (ORDER BY id) AS n,
                  sum(bytes) OVER (ORDER BY id) AS running
           FROM (SELECT id, ${MESSAGE_COLUMNS.map((column) => `coalesce(octet_length(${column}), 0)`).join(" + ")} AS bytes
                 FROM chat_messages WHERE id ${past} CAST(?1 AS INTEGER)
                 ORDER BY id LIMIT ?2))
         WHERE n = 1 OR running <= ?3`,
      )
      .get(from, window, DELETE_PART_BYTES)?.last;
    if (last === null || last === undefined) return { next: null, rows: 0 };
    const rows = sqlite
      .transaction(
        () =>
          sqlite
            .query<unknown, [string, string]>(
              `DELETE FROM chat_messages WHERE id ${past} CAST(?1 AS INTEGER)
                 AND id <= CAST(?2 AS INTEGER)
                 AND NOT EXISTS (SELECT 1 FROM chat_conversations AS c
                                 WHERE c.id = chat_messages.conversation_id)`,
            )
            .run(from, last).changes,
      )
      .immediate();
    return { next: last, rows };
  }

  /** `erase` in an immediate transaction of its own. */
  eraseInTransaction(owners: readonly ChatOwner[]): void {
    this.options.sqlite.transaction(() => this.erase(owners)).immediate();
  }

  /**
   * The owners holding chat rows (conversations, usage) whom `erased` says were erased: rows put
   * back into the file from before their erasure, which no one can read (probe 93b F1). Each
   * owner once, read by the owner columns' indexes; an owner Palisade never writes (not text, an
   * unknown kind) is no principal and is left to db:verify.
   */
  erasedOwners(erased: (principal: string) => boolean): ChatOwner[] {
    const owners: ChatOwner[] = [];
    const distinct = this.options.sqlite.query<{ kind: unknown; id: unknown }, []>(
      `SELECT owner_kind AS kind, owner_id AS id FROM chat_conversations
       UNION SELECT owner_kind, owner_id FROM chat_usage`,
    );
    for (const { kind, id } of distinct.iterate()) {
      if (typeof id !== "string" || !CHAT_OWNER_KINDS.some((known) => known === kind)) continue;
      const owner = { kind: kind as ChatOwner["kind"], id };
      if (erased(`${owner.kind}:${owner.id}`)) owners.push(owner);
    }
    return owners;
  }

  erase(owners: readonly ChatOwner[]): void {
    // Statements prepared once an erasure, not a query built per owner: a user's 2,000 keys held
    // the erasure's transaction ~125 ms here building them.
    const { sqlite } = this.options;
    const conversations = sqlite.query<unknown, [string, string]>(
      "DELETE FROM chat_conversations WHERE owner_kind = ?1 AND owner_id = ?2",
    );
    const usage = sqlite.query<unknown, [string, string]>(
      "DELETE FROM chat_usage WHERE owner_kind = ?1 AND owner_id = ?2",
    );
    for (const owner of owners) {
      for (const id of heldIds(owner)) conversations.run(owner.kind, id);
      usage.run(owner.kind, owner.id);
      this.options.budget.turns.endAllOf(owner);
    }
  }

  /**
   * Deletes the messages the query `which` selects (their ids), in id order up to `maxBytes` of
   * text (the first always), lowering their conversations' counts, in one transaction; what went,
   * in rows and bytes. What is chosen must be a prefix of each conversation (its oldest messages):
   * the ones left still verify (history-seal.ts). Chosen in SQL, never by ids read back into
   * JavaScript: a message id past 2^53 reads rounded, a conversation id that is no UTF-8 reads as
   * U+FFFD, and a delete by what was read matched nothing (probe 60b F1, F3).
   */
  private deleteMessages(
    which: SQL,
    maxBytes = DELETE_PART_BYTES,
  ): { rows: number; bytes: number } {
    const within = idsWithinBytes(
      chatMessages,
      sql`coalesce(octet_length(content), 0)`,
      which,
      maxBytes,
    );
    return this.db.transaction(
      (tx) => {
        const deleted = tx
          .delete(chatMessages)
          .where(sql`${chatMessages.id} IN (${within})`)
          .returning({
            conversationId: chatMessages.conversationId,
            bytes: sql<number | null>`octet_length(${chatMessages.content})`,
          })
          .all();
        const byConversation = new Map<string, number>();
        let bytes = 0;
        for (const { conversationId, bytes: each } of deleted) {
          byConversation.set(conversationId, (byConversation.get(conversationId) ?? 0) + 1);
          bytes += Number(each ?? 0);
        }
        for (const [conversationId, gone] of byConversation) {
          tx.update(chatConversations)
            .set({
              messageCount: sql`CASE WHEN ${HOLDS_A_COUNT} THEN max(0, ${KEPT_COUNT} - ${gone}) ELSE ${COUNTED} END`,
            })
            .where(eq(chatConversations.id, conversationId))
            .run();
        }
        return { rows: deleted.length, bytes };
      },
      { behavior: "immediate" },
    );
  }

  /**
   * An erasure's first parts (privacy.ts): conversations from the rowid after `after` on, each
   * whose row fails its seal but whose seal names one of the owners (its owner columns changed in
   * the database file: probe 72a F1) given back to that owner, so the parts that follow erase it
   * with the rest. Before, such a conversation was neither exported nor erased and the erasure
   * answered 204 over its messages. The columns are put back to what the seal says, never
   * resealed, and only while the row still holds the seal read: a row Palisade did not write stays
   * failing. A part reads up to `batch` rows and spends about `budget` HMACs at most (one a row,
   * and one an owner for each row failing its seal: a user with a thousand keys made each such
   * row cost a thousand, and a part of them held the event loop ~0.3 s, probe 72c B3). Returns the
   * rowid to go on after (as text: the file may hold rowids past 2^53), null when the table has
   * been read to its end, and the rows failing their seal that it did not give back (for the
   * erasure's transaction to try against the keys only it finds: `reclaimFailing`).
   */
  reclaimSealedTo(
    owners: readonly ChatOwner[],
    after: string | null,
    batch: number,
    budget: number,
  ): { next: string | null; failing: FailingConversation[] } {
    const { sqlite, seal } = this.options;
    const rows = sqlite
      .query<FailingConversation, [string | null, number]>(
        `SELECT CAST(rowid AS TEXT) AS at, id, owner_kind AS ownerKind, owner_id AS ownerId, seal
           FROM chat_conversations WHERE ?1 IS NULL OR rowid > CAST(?1 AS INTEGER)
           ORDER BY rowid LIMIT ?2`,
      )
      .all(after, batch);
    const held = heldOwners(owners);
    const failing: FailingConversation[] = [];
    let spent = 0;
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i]!;
      spent++;
      if (!seal.intact.conversation(row)) {
        spent += held.length;
        if (!this.giveBack(row, held)) failing.push(row);
      }
      if (spent >= budget && i < rows.length - 1) return { next: row.at, failing };
    }
    return { next: rows.length < batch ? null : rows[rows.length - 1]!.at, failing };
  }

  /**
   * In the erasure's transaction: the rows `reclaimSealedTo` found failing their seal, tried again
   * against the owners only the transaction finds (a key of the user moved to another account in
   * the file: its sealed row still names the user; probe 72c B1), each given back if its seal names
   * one of them and it still holds the seal read.
   */
  reclaimFailing(owners: readonly ChatOwner[], failing: readonly FailingConversation[]): void {
    const held = heldOwners(owners);
    for (const row of failing) this.giveBack(row, held);
  }

  /** Puts the row's owner back to the one of `held` its seal names; whether one did. */
  private giveBack(row: FailingConversation, held: readonly { kind: string; id: string }[]) {
    const { sqlite, seal } = this.options;
    const sealedTo = held.find(({ kind, id }) =>
      seal.intact.conversation({ ...row, ownerKind: kind, ownerId: id }),
    );
    if (sealedTo === undefined || row.seal === null) return false;
    // Only the row read, as read: a rowid another row took since (the row deleted, its rowid
    // given again) is not given away.
    sqlite
      .query<unknown, [string, string, string, string]>(
        "UPDATE chat_conversations SET owner_kind = ?2, owner_id = ?3 WHERE rowid = CAST(?1 AS INTEGER) AND seal = ?4",
      )
      .run(row.at, sealedTo.kind, sealedTo.id, row.seal);
    return true;
  }

  /**
   * How many parts of `rowsPerPart` rows and DELETE_PART_BYTES of text the owners' chat rows
   * (conversations and messages) take to delete: the erasure's bound on its parts ahead.
   */
  chatPartsOf(owners: readonly ChatOwner[], rowsPerPart: number): number {
    const { sqlite } = this.options;
    const count = sqlite.query<{ rows: number; bytes: number }, [string, string]>(
      `SELECT (SELECT count(*) FROM chat_conversations WHERE owner_kind = ?1 AND owner_id = ?2)
        + (SELECT count(*) FROM chat_messages WHERE conversation_id IN
            (SELECT id FROM chat_conversations WHERE owner_kind = ?1 AND owner_id = ?2)) AS rows,
        (SELECT coalesce(sum(octet_length(content)), 0) FROM chat_messages WHERE conversation_id IN
            (SELECT id FROM chat_conversations WHERE owner_kind = ?1 AND owner_id = ?2)) AS bytes`,
    );
    let rows = 0;
    let bytes = 0;
    for (const owner of owners) {
      for (const id of heldIds(owner)) {
        const held = count.get(owner.kind, id)!;
        rows += held.rows;
        bytes += held.bytes;
      }
    }
    return Math.ceil(rows / rowsPerPart) + Math.ceil(bytes / DELETE_PART_BYTES);
  }

  /**
   * An erasure's part ahead of it (privacy.ts): up to `batch` rows of the owners' chat from
   * `owners[from]` on, each owner's oldest conversation first: one whose messages fit goes whole
   * (its row and its messages), one that does not loses its oldest messages (a prefix: it still
   * verifies, as after a retention run). Every conversation and every owner asked counts one row at
   * least. What went is gone from the owners' index, so each part starts at what is left and
   * costs about the same however many conversations an owner has (probe 42a F1: each part read
   * every conversation of the owner, those it had emptied too). Returns the owner the next part
   * starts from: `owners.length` once none has any left.
   *
   * The oldest conversation is named in SQL (by its rowid, chosen there), not by its id read back:
   * one whose id was written into the file as bytes that are no UTF-8 was never deleted, and the
   * erasure asked for it again every 20 ms, for ever (probe 60b F1). A part that deletes nothing it
   * chose (a trigger written into the file) throws: the erasure's own transaction does the rest.
   */
  eraseSomeChat(owners: readonly ChatOwner[], from: number, batch: number): number {
    const { sqlite } = this.options;
    const OLDEST =
      "SELECT rowid FROM chat_conversations WHERE owner_kind = ?1 AND owner_id = ?2 ORDER BY created_at, id LIMIT 1";
    const oldestHolds = sqlite.query<{ rows: number; bytes: number }, [string, string, number]>(
      `SELECT count(*) AS rows, coalesce(sum(bytes), 0) AS bytes FROM (
         SELECT octet_length(content) AS bytes FROM chat_messages WHERE conversation_id =
           (SELECT id FROM chat_conversations WHERE rowid = (${OLDEST})) LIMIT ?3)`,
    );
    const anyLeft = sqlite.query<{ left: number }, [string, string]>(
      `SELECT EXISTS (${OLDEST}) AS left`,
    );
    const dropOldest = sqlite.query<unknown, [string, string]>(
      `DELETE FROM chat_conversations WHERE rowid = (${OLDEST})`,
    );
    const stuck = () =>
      new Error(
        "an erasure's part deleted none of the chat rows it chose: the database file holds rows that cannot be deleted (a trigger written into it?)",
      );
    /** What a part may still take: rows, and text (DELETE_PART_BYTES; probe 85e F2). */
    type Budget = { rows: number; bytes: number };
    /**
     * Up to the budget's rows and text of the owner's oldest conversation (one row over, for a
     * conversation of exactly that many messages, so none is left with none: probe 42b F4), taken
     * from the budget.
     */
    const takeOldest = (kind: string, id: string, budget: Budget): void => {
      const held = oldestHolds.get(kind, id, budget.rows + 1)!;
      if (held.rows <= budget.rows && held.bytes <= budget.bytes) {
        // Its messages go with it (ON DELETE CASCADE).
        if (dropOldest.run(kind, id).changes === 0) throw stuck();
        budget.rows -= held.rows + 1;
        budget.bytes -= held.bytes;
        return;
      }
      const gone = this.deleteMessages(
        sql`SELECT ${chatMessages.id} FROM ${chatMessages} WHERE ${chatMessages.conversationId} =
          (SELECT ${chatConversations.id} FROM ${chatConversations} WHERE rowid =
            (SELECT rowid FROM ${chatConversations} WHERE ${chatConversations.ownerKind} = ${kind}
              AND ${chatConversations.ownerId} = ${id}
              ORDER BY ${chatConversations.createdAt}, ${chatConversations.id} LIMIT 1))
          ORDER BY ${chatMessages.id} LIMIT ${budget.rows}`,
        Math.max(0, budget.bytes),
      );
      if (gone.rows === 0) throw stuck();
      budget.rows -= gone.rows;
      budget.bytes -= gone.bytes;
    };
    /** The owner's chat, oldest conversation first, within the budget; whether none is left. */
    const takeOf = (owner: ChatOwner, budget: Budget): boolean => {
      let done = true;
      for (const id of heldIds(owner)) {
        while (anyLeft.get(owner.kind, id)!.left === 1) {
          if (budget.rows <= 0 || budget.bytes <= 0) {
            done = false;
            break;
          }
          takeOldest(owner.kind, id, budget);
        }
      }
      return done;
    };
    return this.db.transaction(
      () => {
        let at = from;
        const budget: Budget = { rows: batch, bytes: DELETE_PART_BYTES };
        while (at < owners.length && budget.rows > 0 && budget.bytes > 0) {
          const before = budget.rows;
          if (takeOf(owners[at]!, budget)) at++;
          // Every owner asked counts one row at least.
          if (budget.rows === before) budget.rows--;
        }
        return at;
      },
      { behavior: "immediate" },
    );
  }

  /**
   * Retention: messages older than CHAT_RETENTION_DAYS, then conversations left empty and not
   * touched since, then usage rows of days before it; at most RETENTION_BATCH rows each per run.
   */
  retain(now: number, batch = RETENTION_BATCH): number {
    const cutoff = now - this.options.retentionDays * DAY_MS;
    // A conversation's messages go as a prefix by id, up to a message past the retention:
    // they are chained in the order they were written (history-seal.ts), and the oldest one read is
    // the only one not asked to follow another, so a message taken from the middle refused the
    // genuine conversation as tampered (probe 31a F6: a clock stepped back stamps a later message
    // earlier). Up to the newest expired, not the oldest kept: a message stamped in the future (a
    // clock stepped forward for a turn) would otherwise keep every later one past the retention,
    // for as long as its stamp says (probe 31b F1); a message a wrong clock stamped young goes
    // with the older ones after it, early rather than late. A batch cut inside a conversation leaves
    // a prefix too (probe 31b F2).
    // The oldest messages past the retention (the time index: a backlog of a million messages
    // is not read to find a thousand), and in each of their conversations every message up to the
    // newest of them; by id, so a batch cut inside a conversation leaves a prefix. Chosen in SQL:
    // forged rows whose ids JavaScript reads otherwise (past 2^53, no UTF-8) were chosen on every
    // run and never deleted, and retention stopped for every user (probe 60b F3).
    const expiredPrefixes = sql`SELECT m.id FROM ${chatMessages} AS m JOIN (
        SELECT conversation_id, max(id) AS upto FROM (
          SELECT conversation_id, id FROM ${chatMessages} WHERE created_at < ${cutoff}
          ORDER BY created_at LIMIT ${batch})
        GROUP BY conversation_id) AS expired
      ON m.conversation_id = expired.conversation_id AND m.id <= expired.upto
      ORDER BY m.id LIMIT ${batch}`;
    const messages = this.deleteMessages(expiredPrefixes).rows;
    const emptyConversations = this.db
      .select({ id: chatConversations.id })
      .from(chatConversations)
      .where(
        and(
          lt(chatConversations.updatedAt, cutoff),
          sql`NOT EXISTS (SELECT 1 FROM ${chatMessages} WHERE ${chatMessages.conversationId} = ${chatConversations.id})`,
        ),
      )
      .limit(batch);
    const conversations = this.db
      .delete(chatConversations)
      .where(inArray(chatConversations.id, emptyConversations))
      .returning({ id: chatConversations.id })
      .all().length;
    const oldDay = new Date(cutoff).toISOString().slice(0, 10);
    const oldUsage = this.db
      .select({ rowid: sql`rowid` })
      .from(chatUsage)
      .where(lt(chatUsage.day, oldDay))
      .limit(batch);
    const usage = this.db
      .delete(chatUsage)
      .where(sql`rowid IN ${oldUsage}`)
      .returning({ day: chatUsage.day })
      .all().length;
    return messages + conversations + usage;
  }
}

/** The principal a turn is the provider's caller as: its owner. */
function callerOf(turn: PreparedTurn): string {
  return `${turn.owner.kind}:${turn.owner.id}`;
}
