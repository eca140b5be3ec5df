/**
 * @module
 * A failure of the database rather than of the request, as the client hears it: the same answer
 * from the error handler and from a stream that fails after its first byte (chat), so a lock is
 * never a 500 on one path and a 503 on the other.
 */
import { isDatabaseBusy } from "../../db/busy";
import { isStoreUnavailable } from "../../db/client";

export interface StorageRefusal {
  code: "SERVICE_UNAVAILABLE";
  detail: string;
  headers: { "retry-after": string };
  /** Another process held the write lock past the short wait (db/busy): retrying will work. */
  busy: boolean;
}

/** The 503 for a locked, read-only, full or failing database; null for any other error. */
export function storageRefusal(error: unknown): StorageRefusal | null {
  const headers = { "retry-after": "1" };
  if (isDatabaseBusy(error) || isDatabaseBusy((error as { cause?: unknown } | null)?.cause)) {
    return {
      code: "SERVICE_UNAVAILABLE",
      detail: "The database is busy; try again shortly.",
      headers,
      busy: true,
    };
  }
  if (isStoreUnavailable(error)) {
    return {
      code: "SERVICE_UNAVAILABLE",
      detail: "The service cannot store this right now; try again shortly.",
      headers,
      busy: false,
    };
  }
  return null;
}
