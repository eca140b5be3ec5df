/**
 * @module
 * Large bodies, bounded in time and in total. A body is held in memory while it arrives, up to its
 * route's limit (256 KiB for the webhooks), and Bun's idle timeout starts again at every byte: a
 * client sending a byte every few seconds held its connection and its buffer for as long as it
 * liked, and 1,500 such connections from as many addresses held 447 MB (probe 30a F4).
 *
 * So a body declared over SMALL_BODY_BYTES, or sent chunked (its length unknown), must arrive
 * within BODY_DEADLINE_MS, or the request is answered 408 and its connection closed; and at most
 * LARGE_BODY_BUDGET_BYTES of such bodies (by declared length, a chunked one by its limit) are
 * read at once, past which one is answered 503 at once and its connection closed before it is
 * read. Both answers say `Connection: close`: answered without it, Bun keeps reading the body.
 * A small body (every ordinary API call: a chat message, a login) skips both, so the common path
 * costs one comparison.
 */
import { AppError } from "../../errors";

/** Bodies up to this many bytes are read as they come (at most this much held per connection). */
export const SMALL_BODY_BYTES = 16 * 1024;
/**
 * How long a large body may take to arrive: 256 KiB at ~13 KB/s. Under Bun's own cut of a slow
 * body (~30 s), so the 408 reaches the client rather than a closed connection (probe 30e F3).
 */
export const BODY_DEADLINE_MS = 20_000;
/** Large bodies read at once, in bytes. */
export const LARGE_BODY_BUDGET_BYTES = 64 * 1024 * 1024;
/**
 * Of which one client (an IPv4 address, an IPv6 /64) may hold: four webhook bodies. Without it,
 * 256 slow connections held the whole budget and every large or chunked body of everyone else was
 * refused (probe 30e F2); now that takes 64 addresses.
 */
export const LARGE_BODY_CLIENT_BYTES = 1024 * 1024;

export interface LargeBodyReads {
  /**
   * Reads a body of `size` bytes (declared, or the limit) from `client` (its address key) with
   * `read`, within the deadline and the budget: throws REQUEST_TIMEOUT (408) past the deadline,
   * SERVICE_UNAVAILABLE (503) when the budget or the client's share of it is spent, each with
   * `Connection: close`.
   */
  read<T>(size: number, client: string, read: () => Promise<T>): Promise<T>;
}

export function largeBodyReads(
  options: { deadlineMs?: number; budgetBytes?: number; clientBytes?: number } = {},
): LargeBodyReads {
  const deadlineMs = options.deadlineMs ?? BODY_DEADLINE_MS;
  const budgetBytes = options.budgetBytes ?? LARGE_BODY_BUDGET_BYTES;
  const clientBytes = options.clientBytes ?? LARGE_BODY_CLIENT_BYTES;
  let reading = 0;
  /** Bytes each client is being read, for the clients with any. */
  const byClient = new Map<string, number>();
  return {
    read(size, client, read) {
      const own = byClient.get(client) ?? 0;
      if (reading + size > budgetBytes || own + size > Math.max(clientBytes, size)) {
        return Promise.reject(
          new AppError(
            "SERVICE_UNAVAILABLE",
            "Too many large request bodies are arriving at once; retry shortly.",
            undefined,
            { "retry-after": "1", connection: "close" },
          ),
        );
      }
      reading += size;
      byClient.set(client, own + size);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new AppError(
                "REQUEST_TIMEOUT",
                `The request body did not arrive within ${deadlineMs / 1000} s.`,
                undefined,
                { connection: "close" },
              ),
            ),
          deadlineMs,
        );
      });
      return Promise.race([read(), late]).finally(() => {
        clearTimeout(timer);
        reading -= size;
        const left = (byClient.get(client) ?? size) - size;
        if (left > 0) byClient.set(client, left);
        else byClient.delete(client);
      });
    },
  };
}
