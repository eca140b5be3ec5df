/**
 * @module
 * A privacy contributor: one kind of data a feature (or the audit log) holds about a user, with
 * how to export it, erase it and keep it within its retention. The privacy service asks every
 * contributor and reaches into no table itself.
 */

/**
 * A part of the export too large to build whole (a year of chat is hundreds of megabytes as
 * objects): the JSON text of one value, a piece at a time, each piece read from the database when
 * the answer is ready for it. A piece that cannot be read (the database failing, a change found
 * mid-way) throws, and the answer is cut there, never finished as if whole.
 */
export class StreamedJson {
  constructor(readonly pieces: () => Iterable<string>) {}

  /** The whole value, for a caller that does want it in memory (tests). */
  value(): unknown {
    return JSON.parse([...this.pieces()].join(""));
  }

  /** `JSON.stringify` of a document holding it writes the whole value. */
  toJSON(): unknown {
    return this.value();
  }
}

export interface ExportContext {
  /**
   * Every audit-log actor that stands for the user: `user:<id>` and what contributors add (the
   * API keys the user owns), gathered before anything is erased.
   */
  actors: readonly string[];
}

export interface ErasureContext extends ExportContext {
  /** The keyed pseudonym that replaces the user's id wherever a record must outlive the account. */
  pseudonym: string;
  /** The erasing request's id (null from the CLI), for the audit rows the erasure writes. */
  requestId: string | null;
  /**
   * Who asked, as the audit log names them (`user:<id>`; `cli` for `users:erase`): the actor of
   * what is done ahead of the erasure's transaction, while the account stands. The pseudonym must
   * not appear beside the living account's ids (probe 42a F2); the erasure rewrites these rows too.
   */
  requestedBy: string;
}

export interface PrivacyContributor {
  /** Its section's name in the export document. */
  name: string;
  /** Its section: a JSON value, or a StreamedJson read as the answer is sent. */
  export(userId: string, context: ExportContext): unknown;
  /**
   * Audit-log actors that act for the user besides `user:<id>` (an API key: `key:<id>`); for an
   * erasure, also those found at a cost an export does not pay (a key moved away in the file).
   */
  actors?(userId: string, forErasure?: boolean): string[];
  /**
   * What of its erasure can be done while the account still stands, for what is too much to do
   * while every other request waits (a long chat history, thousands of keys; probe 41b F5): a step
   * that does a bounded part in a transaction of its own and says whether it is done. The erasure
   * runs it until it is, letting other work in between, before its transaction; `erase` then does
   * what came since. A part must leave what it holds as sound as it found it: the erasure may stop
   * between two parts, and the account is then still there.
   */
  eraseAhead?(userId: string, context: ErasureContext): () => boolean;
  /**
   * Deletes, or strips the personal fields of, what it holds for the user. Runs inside the
   * erasure's transaction, before the account row is deleted.
   */
  erase(userId: string, context: ErasureContext): void;
  /**
   * What is left of its erasure once the erasure's transaction has committed, for what is too long
   * to rewrite while every other request waits (the audit log of a long history, probe 40a F3):
   * a step that does a bounded part in a transaction of its own and says whether it is done. The
   * erasure runs it until it is, letting other work in between, before it answers.
   */
  eraseRest?(userId: string, context: ErasureContext): () => boolean;
  /**
   * Deletes what is older than its retention allows (chat messages past CHAT_RETENTION_DAYS);
   * bounded work per call, run by the background maintenance. Returns how many rows went.
   */
  retain?(now: number): number;
  /**
   * What it holds of principals the audit log records erased (`erased`): rows copied back into the
   * file from before their erasure, which no one can read and no erasure reaches, the account being
   * gone (probe 93b F1); and rows of no owner at all, put back without the row they belong to
   * (`unowned`: chat messages without their conversation, 93c F3). The principals found, and a
   * step deleting a bounded part of those rows in a transaction of its own, saying whether it is
   * done.
   */
  erasedRemains?(erased: (principal: string) => boolean): {
    principals: string[];
    unowned: boolean;
    step: () => boolean;
  };
}
