/**
 * @module
 * Large bodies, bounded in time and in total. A body is held in memory while it arrives, up to its
 * route's limit (256 KiB for the webhooks), and Bun's idle timeout starts again at every byte: a
 * client sending a byte every few seconds held its connection and its buffer for as long as it
 * liked, and 1,500 such connections from as many addresses held 447 MB (probe 30a F4).
 *
 * So a body declared over SMALL_BODY_BYTES, or sent chunked (its length unknown), must arrive
 * within BODY_DEADLINE_MS, or the request is answered 408 and its connection closed; and at most
 * LARGE_BODY_BUDGET_BYTES of such bodies (by declared length, a chunked one by what has arrived)
 * are read at once, LARGE_BODY_CLIENT_BYTES of them from one client, past which one is answered
 * 503 and its connection closed. Both answers say `Connection: close`: answered without it, Bun
 * keeps reading the body. A small declared body (every ordinary API call: a chat message, a
 * login) skips both, so the common path costs one comparison.
 */
import { AppError } from "../../errors";
import { networkKeyOf } from "../client-ip/resolve";

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
/**
 * And of which one network (an IPv4 /24, an IPv6 /48) may hold: four clients' shares. A client key
 * is one /64, and an IPv6 /58 holds 64 of them: one party filled the whole budget from one /58
 * (probe 30f F2). Now that takes 16 networks of that size.
 */
export const LARGE_BODY_NETWORK_BYTES = 4 * 1024 * 1024;

/** Bytes of a body taken from the budget as they are known, and given back at its end. */
export interface BodyAccount {
  /** Takes `bytes` more; throws SERVICE_UNAVAILABLE (503, `Connection: close`) past a bound. */
  grow(bytes: number): void;
}

export interface LargeBodyReads {
  /**
   * Reads a body of `client` (its address key) with `read`, within the deadline and the budget:
   * a declared one of `size` bytes is charged all of it before it is read; one sent chunked
   * (`size` null) is charged what arrives, as `read` grows the account it is given (a chunked
   * body is charged its route's limit no longer: 200 small chunked deliveries from one address
   * were refused, and a 40-byte one cost 64 KiB of the budget, probe 30e F2). Throws
   * REQUEST_TIMEOUT (408) past the deadline, SERVICE_UNAVAILABLE (503) past the budget or the
   * client's share of it, each with `Connection: close`.
   */
  read<T>(
    size: number | null,
    client: string,
    read: (account: BodyAccount) => Promise<T>,
  ): Promise<T>;
}

const busy = () =>
  new AppError(
    "SERVICE_UNAVAILABLE",
    "Too many large request bodies are arriving at once; retry shortly.",
    undefined,
    { "retry-after": "1", connection: "close" },
  );

export function largeBodyReads(
  options: {
    deadlineMs?: number;
    budgetBytes?: number;
    clientBytes?: number;
    networkBytes?: number;
  } = {},
): LargeBodyReads {
  const deadlineMs = options.deadlineMs ?? BODY_DEADLINE_MS;
  const budgetBytes = options.budgetBytes ?? LARGE_BODY_BUDGET_BYTES;
  const clientBytes = options.clientBytes ?? LARGE_BODY_CLIENT_BYTES;
  const networkBytes = options.networkBytes ?? LARGE_BODY_NETWORK_BYTES;
  let reading = 0;
  /** Bytes each client, and each network, is being read, for those with any. */
  const byClient = new Map<string, number>();
  const byNetwork = new Map<string, number>();
  const giveBack = (held: Map<string, number>, key: string, bytes: number) => {
    const left = (held.get(key) ?? bytes) - bytes;
    if (left > 0) held.set(key, left);
    else held.delete(key);
  };

  const accountOf = (client: string) => {
    const network = networkKeyOf(client);
    let taken = 0;
    let ended = false;
    return {
      grow(bytes: number) {
        // A read the deadline already answered goes on until the connection closes: it takes
        // nothing more, and stops.
        if (ended) throw busy();
        const own = byClient.get(client) ?? 0;
        const networks = byNetwork.get(network) ?? 0;
        // One body alone may always be read up to its route's limit; a second is what is bounded.
        if (
          reading + bytes > budgetBytes ||
          (own > 0 && own + bytes > clientBytes) ||
          (networks > 0 && networks + bytes > networkBytes)
        ) {
          throw busy();
        }
        reading += bytes;
        taken += bytes;
        byClient.set(client, own + bytes);
        byNetwork.set(network, networks + bytes);
      },
      end() {
        ended = true;
        reading -= taken;
        giveBack(byClient, client, taken);
        giveBack(byNetwork, network, taken);
        taken = 0;
      },
    };
  };

  return {
    read<T>(
      size: number | null,
      client: string,
      read: (account: BodyAccount) => Promise<T>,
    ): Promise<T> {
      const account = accountOf(client);
      try {
        if (size !== null) account.grow(size);
      } catch (error) {
        return Promise.reject(error);
      }
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
      let body: Promise<T>;
      try {
        body = read(account);
      } catch (error) {
        body = Promise.reject(error);
      }
      return Promise.race([body, late]).finally(() => {
        clearTimeout(timer);
        account.end();
      });
    },
  };
}
