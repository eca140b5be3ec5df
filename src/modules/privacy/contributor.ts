/**
 * @module
 * A privacy contributor: one kind of data a feature (or the audit log) holds about a user, with
 * how to export it, erase it and keep it within its retention. The privacy service asks every
 * contributor and reaches into no table itself.
 */

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
}

export interface PrivacyContributor {
  /** Its section's name in the export document. */
  name: string;
  export(userId: string, context: ExportContext): unknown;
  /** Audit-log actors that act for the user besides `user:<id>` (an API key: `key:<id>`). */
  actors?(userId: string): string[];
  /**
   * Deletes, or strips the personal fields of, what it holds for the user. Runs inside the
   * erasure's transaction, before the account row is deleted.
   */
  erase(userId: string, context: ErasureContext): void;
  /**
   * Deletes what is older than its retention allows (chat messages past CHAT_RETENTION_DAYS);
   * bounded work per call, run by the background maintenance. Returns how many rows went.
   */
  retain?(now: number): number;
}
