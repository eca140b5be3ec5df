/**
 * @module
 * The user's rights over their data: export everything held about them, and erasure.
 *
 * The service reaches into no table: the account (the profile, deleted last) and every privacy
 * contributor (sessions, API keys, the audit log, and chat or payments as they land) say what
 * they hold. Erasure runs in one transaction: each contributor deletes or strips what it holds —
 * sessions and keys are revoked, the audit log replaces the user's id by a keyed pseudonym
 * (dropping the address and the salt that committed to both, each rewrite authenticated with
 * AUDIT_SECRET_KEY, so the chain still verifies and a rewrite by anyone else does not) — and then
 * the account row goes. What a contributor has too much of to do in that transaction without
 * holding every other request it does a bounded part at a time, each part a transaction of its own
 * with other requests served between: what can go while the account stands (a long chat history,
 * thousands of API keys) before it (`eraseAhead`), leaving the transaction what came since; what
 * must wait for the account's erasure (a long audit history) after it (`eraseRest`), before the
 * erasure answers. A process that stops part-way after the transaction has the rest finished by
 * the next one's maintenance (erasure-resumption.ts); before it, the account stands, with less
 * held about it, for the erasure asked again.
 */
import type { Database } from "bun:sqlite";
import type { Clock } from "../../clock";
import { isDatabaseBusy } from "../../db/busy";
import type { Logger } from "../../logging/logger";
import type { AuditLog } from "../../plugins/audit/log";
import { type PrivacyContributor, StreamedJson } from "./contributor";
import { ERASURE_PART_PAUSE_MS } from "./erasure-parts";

export type { ErasureContext, ExportContext, PrivacyContributor } from "./contributor";
export { StreamedJson } from "./contributor";

/** The account itself: the export's profile, and the row erasure deletes last. */
export interface PrivacyAccount {
  /** The profile of an account Palisade trusts (its row matches its seal), or null. */
  find(userId: string): object | null;
  /**
   * Whether a row with this id is stored at all, trusted or not: an operator may erase an account
   * whose row fails its seal, whose owner can no longer sign in to erase it.
   */
  stored(userId: string): boolean;
  remove(userId: string): void;
  /** Whether the account is a trusted admin's; and whether any trusted admin account is left. */
  isAdmin?(userId: string): boolean;
  anyAdmin?(): boolean;
}

/** Who asked for an erasure: the signed-in user (DELETE /api/me), or an operator (the CLI). */
export interface ErasureRequest {
  ip: string | null;
  requestId: string | null;
  /** `operator`: `users:erase`, which also erases an account whose row fails its seal. */
  by?: "user" | "operator";
}

export interface PrivacyServiceOptions {
  sqlite: Database;
  clock: Clock;
  audit: AuditLog;
  logger: Logger;
  account: PrivacyAccount;
  contributors: readonly PrivacyContributor[];
  /** Told when an erasure's rest could not be finished here (its actors), for the maintenance. */
  onUnfinished?: (actors: readonly string[]) => void;
  /** How long a part of an erasure's rest waits out another connection's lock (30 s). */
  restLockWaitMs?: number;
  /**
   * Whether the audit log records a principal (`user:<id>`, `key:<id>`) erased, as the credential
   * seals read it: what `erasedRemains` finds rows of.
   */
  erased?: (principal: string) => boolean;
}

/** How long the rest of an erasure waits out another connection's write lock, in all. */
const REST_LOCK_WAIT_MS = 30_000;
const REST_LOCK_RETRY_MS = 25;
/** How long a stop waits for the erasures in flight to reach their transaction and commit it. */
export const ERASURE_STOP_WAIT_MS = 60_000;

/** What `inParts` answers when a stop asked the erasures in flight to hurry. */
const HURRIED = Symbol("hurried");

export class PrivacyService {
  /** The actors of this process's erasures whose rest is under way. */
  private readonly erasingNow = new Set<string>();
  /** This process's erasures under way, until each has answered. */
  private readonly erasures = new Set<Promise<boolean>>();
  /** Set by a stop: the parts ahead run back to back, the rest is left to the maintenance. */
  private hurrying = false;

  constructor(private readonly options: PrivacyServiceOptions) {}

  /**
   * At a stop whose drain time is up: each erasure in flight runs its remaining parts ahead back to
   * back (no pause for other requests between them) and its transaction, and answers, its rest left
   * to the maintenance of the next start (it is recorded, and found again). Resolves once they have
   * answered, or after `withinMs`. A stop cut an erasure still deleting its parts ahead: the account
   * stood, part of its data gone, and nothing was said (probe 83c F2). The parts are run, not
   * skipped: some do what the transaction does not (giving back the rows the file moved to another
   * owner; probe 83e F2: skipped, a conversation moved to another account kept the erased user's
   * text).
   */
  async hurry(withinMs = ERASURE_STOP_WAIT_MS): Promise<void> {
    this.hurrying = true;
    if (this.erasures.size === 0) return;
    this.options.logger.info(
      { erasures: this.erasures.size, withinMs },
      "finishing the erasures in flight before closing connections (what is left of their audit history is rewritten after the restart)",
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), withinMs);
    });
    const outcome = await Promise.race([Promise.allSettled([...this.erasures]), late]);
    clearTimeout(timer);
    if (outcome === "late") {
      this.options.logger.error(
        { erasures: this.erasures.size, withinMs },
        "erasures still running when the stop's wait ended: their connections are cut; an account still standing must be erased again",
      );
    }
  }

  /** Whether this process is rewriting the actor's rows now, an erasure's rest under way. */
  erasing(actor: string): boolean {
    return this.erasingNow.has(actor);
  }

  pseudonymOf(actor: string): string {
    return this.options.audit.pseudonymOf(actor);
  }

  /** The user, and every actor a contributor says acts for them (their API keys). */
  actorsOf(userId: string, forErasure = false): string[] {
    const actors = [`user:${userId}`];
    for (const contributor of this.options.contributors) {
      actors.push(...(contributor.actors?.(userId, forErasure) ?? []));
    }
    return actors;
  }

  /**
   * Everything held about the user, by section; a section too large to build whole is a
   * StreamedJson, read when it is written (`exportText`). Null when there is no such account.
   */
  export(userId: string): Record<string, unknown> | null {
    const profile = this.options.account.find(userId);
    if (!profile) return null;
    const document: Record<string, unknown> = {
      exportedAt: new Date(this.options.clock.now()).toISOString(),
      profile,
    };
    const actors = this.actorsOf(userId);
    for (const contributor of this.options.contributors) {
      document[contributor.name] = contributor.export(userId, { actors });
    }
    return document;
  }

  /**
   * The export as JSON text, a piece at a time: the small sections are read now (a failure there
   * is the answer's error), each streamed one as its pieces are asked for, so memory holds a page
   * of it at a time, not the user's whole history.
   */
  exportText(userId: string): Iterable<string> | null {
    const document = this.export(userId);
    return document && jsonPieces(document);
  }

  /**
   * What the contributors hold of principals the audit log records erased: rows copied back into
   * the file from before their erasure (a backup restored over the tables), which no one can read,
   * and which no erasure reaches, the account being gone (probe 93b F1: an erased user's
   * conversations, with their text, stayed until retention). The principals, and `purge`, which
   * deletes those rows a part at a time (as an erasure's parts ahead of it) and records each
   * principal's erasure again, `privacy.erased` under its erasure's pseudonym with
   * `{by: "operator", remains: "true"}` (`users:purge-erased`).
   */
  erasedRemains(): { principals: string[]; unowned: boolean; purge(): Promise<void> } {
    const { contributors, erased = () => false, audit } = this.options;
    const found = contributors.flatMap((contributor) => {
      const remains = contributor.erasedRemains?.(erased);
      return remains === undefined ? [] : [remains];
    });
    const principals = [...new Set(found.flatMap((remains) => remains.principals))];
    return {
      principals,
      unowned: found.some((remains) => remains.unowned),
      purge: async () => {
        for (const remains of found) {
          const failure = await this.inParts(remains.step, "hurry");
          if (failure !== null) throw failure;
        }
        for (const principal of principals) {
          audit.record({
            type: "privacy.erased",
            outcome: "success",
            actor: audit.erasedAs(principal) ?? this.pseudonymOf(principal),
            detail: { by: "operator", remains: "true" },
          });
        }
        audit.flush();
      },
    };
  }

  /** Runs every contributor's retention; the maintenance task calls this. */
  retain(now: number): number {
    let removed = 0;
    for (const contributor of this.options.contributors) {
      removed += contributor.retain?.(now) ?? 0;
    }
    return removed;
  }

  /**
   * Erases the account and everything held about it; false when there is no such account. Resolves
   * once every contributor's rest is done too (or, when the database keeps failing, left to the
   * maintenance, which is logged).
   */
  async erase(userId: string, meta: ErasureRequest): Promise<boolean> {
    const erasure = this.eraseNow(userId, meta);
    this.erasures.add(erasure);
    try {
      return await erasure;
    } finally {
      this.erasures.delete(erasure);
    }
  }

  private async eraseNow(userId: string, meta: ErasureRequest): Promise<boolean> {
    const { sqlite, account, audit, contributors } = this.options;
    const byOperator = meta.by === "operator";
    if (byOperator ? !account.stored(userId) : !account.find(userId)) return false;
    const pseudonym = this.pseudonymOf(`user:${userId}`);
    const wasAdmin = account.isAdmin?.(userId) === true;
    const requestedBy = byOperator ? "cli" : `user:${userId}`;
    const ahead = {
      pseudonym,
      // As an export finds them (the keys listed under the user whose seal names them): the scan
      // of every key's seal (~0.3 s with 20,000 keys in the file, probe 42a F5) is made by the
      // keys' step ahead, a part at a time, and the transaction looks at what came after it.
      actors: this.actorsOf(userId, false),
      requestId: meta.requestId,
      requestedBy,
    };
    for (const contributor of contributors) {
      const step = contributor.eraseAhead?.(userId, ahead);
      if (step === undefined) continue;
      const failure = await this.inParts(step, "hurry");
      // The transaction below does whatever is left, as it would have done all of it.
      if (failure !== null) {
        this.options.logger.warn(
          { err: failure, contributor: contributor.name, pseudonym },
          "an erasure's parts ahead of it stopped: its transaction does the rest",
        );
      }
    }
    const context = sqlite
      .transaction(() => {
        // Asked again with the write lock held: of two erasures of one account at once (the API's
        // and the CLI's), the second finds nothing and records nothing (probe 41b F7).
        if (!account.stored(userId)) return null;
        const actors = this.actorsOf(userId, true);
        const context = { pseudonym, actors, requestId: meta.requestId, requestedBy };
        for (const contributor of contributors) contributor.erase(userId, context);
        account.remove(userId);
        // The last admin erasing itself leaves the admin routes to admin-scoped keys alone: said
        // in the record, as the CLI says it (probe 38b F5). Their right to erase is not refused
        // for it.
        const noAdminLeft = wasAdmin && account.anyAdmin?.() === false;
        const detail = {
          ...(byOperator ? { by: "operator" } : {}),
          ...(noAdminLeft ? { noAdminLeft: "true" } : {}),
        };
        // Written with the account's deletion, before the rest of a long history: a process
        // stopped during the rest leaves it to the maintenance, and the record must not go with it
        // (probe 41b F2); nor one stopped in the instant after the commit (probe 42b F2: written
        // right after it, a kill there left an erased account with no record).
        audit.record({
          type: "privacy.erased",
          outcome: "success",
          actor: pseudonym,
          requestId: meta.requestId,
          ...(Object.keys(detail).length > 0 ? { detail } : {}),
        });
        audit.flush();
        return context;
      })
      .immediate();
    if (context === null) return false;
    for (const actor of context.actors) this.erasingNow.add(actor);
    try {
      for (const contributor of contributors) {
        const step = contributor.eraseRest?.(userId, context);
        if (step !== undefined) {
          await this.finishRest(contributor.name, step, pseudonym, context.actors);
        }
      }
    } finally {
      for (const actor of context.actors) this.erasingNow.delete(actor);
    }
    copyErasureIntoFile(sqlite);
    return true;
  }

  /**
   * Runs an erasure's rest until it is done, 20 ms between two parts, so that other requests are
   * served and other processes (the service, when the CLI erases) get the write lock between
   * them (probe 41b F4: taken again at once, it refused their writes); another connection's write
   * lock is waited out (up to 30 s in all). A
   * rest that cannot finish here is logged and left to the maintenance: the account is erased
   * already, and the rows left are rewritten by the next maintenance that finds them.
   */
  private async finishRest(
    name: string,
    step: () => boolean,
    pseudonym: string,
    actors: readonly string[],
  ): Promise<void> {
    const failure = await this.inParts(step, "leave");
    if (failure === null) return;
    if (failure === HURRIED) {
      this.options.logger.info(
        { contributor: name, pseudonym },
        "an erasure's rest is left to the maintenance at the stop: the account is erased, and the next start rewrites what is left",
      );
      this.options.onUnfinished?.(actors);
      return;
    }
    this.options.logger.error(
      { err: failure, contributor: name, pseudonym },
      "an erasure stopped part-way: the account is erased, and the maintenance rewrites what is left",
    );
    this.options.onUnfinished?.(actors);
  }

  /**
   * Runs `step` until it says it is done, a pause between two parts; null once done, or the error
   * of a part that failed (a lock held past its wait, or anything else). Once a stop hurries the
   * erasures (`hurry`), the parts follow each other without the pause (`"hurry"`), or are left to
   * the maintenance (`"leave"`: HURRIED).
   */
  private async inParts(step: () => boolean, atStop: "hurry" | "leave"): Promise<unknown> {
    // Since when the part now asked has been kept out by another connection's lock: each part
    // has its 30 s, not the whole rest (probe 41f F1: a long history used them up by itself).
    let lockedSince: number | null = null;
    for (;;) {
      if (this.hurrying && atStop === "leave") return HURRIED;
      try {
        if (step()) return null;
        lockedSince = null;
        // At a stop: the event loop's turn (what else ends gets its I/O), not the pause.
        if (this.hurrying) await new Promise((resolve) => setImmediate(resolve));
        else await Bun.sleep(ERASURE_PART_PAUSE_MS);
      } catch (error) {
        lockedSince ??= performance.now();
        const waitMs = this.options.restLockWaitMs ?? REST_LOCK_WAIT_MS;
        if (isDatabaseBusy(error) && performance.now() - lockedSince < waitMs) {
          await Bun.sleep(REST_LOCK_RETRY_MS);
          continue;
        }
        return error;
      }
    }
  }

  /** Whether any trusted admin account is left (unknown: true). */
  adminsRemain(): boolean {
    return this.options.account.anyAdmin?.() !== false;
  }
}

/** An object's JSON text with its StreamedJson values written piece by piece, in order. */
function* jsonPieces(document: Record<string, unknown>): Generator<string> {
  let separator = "{";
  for (const [name, value] of Object.entries(document)) {
    if (value === undefined) continue;
    yield `${separator}${JSON.stringify(name)}:`;
    separator = ",";
    if (value instanceof StreamedJson) yield* value.pieces();
    else yield JSON.stringify(value);
  }
  yield separator === "{" ? "{}" : "}";
}

/**
 * The erasure's zeroed pages (secure_delete) are in the WAL; the database file keeps the pages as
 * they were, the erased account's address and password hash with them, until a checkpoint copies
 * them over — for a quiet service, not until 16 MB more have been written. A passive checkpoint now
 * copies them (and whatever else is committed) at once, waiting on no one: a reader holding an older
 * snapshot keeps those pages for the next one. Erasures are rare, so the copy and its sync are
 * cheap where they are.
 */
function copyErasureIntoFile(sqlite: Database): void {
  try {
    sqlite.query("PRAGMA wal_checkpoint(PASSIVE)").get();
  } catch {
    // Busy or failing: the next checkpoint copies them, as it would have without this one.
  }
}
