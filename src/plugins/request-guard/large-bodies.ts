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
 * are read at once, LARGE_BODY_CLIENT_BYTES of them from one client and LARGE_BODY_NETWORK_BYTES
 * from one network. A body past its client's or network's share is that client's excess, answered
 * 429 RATE_LIMITED: one address holding four slow bodies made every further one of its own a 503,
 * each a server error counted towards a page and sent to Sentry (probe 44a F1). Only the whole
 * budget full is the service declining (503), and that takes 64 clients in 16 networks. Every
 * refusal closes the connection: answered without `Connection: close`, Bun keeps reading the body.
 * A small declared body (every ordinary API call: a chat message, a login) skips all of it, so the
 * common path costs one comparison.
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
  /**
   * Takes `bytes` more; throws RATE_LIMITED (429) past the client's or network's share,
   * SERVICE_UNAVAILABLE (503) past the whole budget, each with `Connection: close`.
   */
  grow(bytes: number): void;
}

export interface LargeBodyReads {
  /**
   * Reads a body of `client` (its address key) with `read`, within the deadline and the budget:
   * a declared one of `size` bytes is charged all of it before it is read; one sent chunked
   * (`size` null) is charged what arrives, as `read` grows the account it is given (a chunked
   * body is charged its route's limit no longer: 200 small chunked deliveries from one address
   * were refused, and a 40-byte one cost 64 KiB of the budget, probe 30e F2). Throws
   * REQUEST_TIMEOUT (408) past the deadline, RATE_LIMITED (429) past the client's or its
   * network's share, SERVICE_UNAVAILABLE (503) past the whole budget, each with `Connection: close`.
   */
  read<T>(
    size: number | null,
    client: string,
    read: (account: BodyAccount) => Promise<T>,
  ): Promise<T>;
}

const budgetFull = () =>
  new AppError(
    "SERVICE_UNAVAILABLE",
    "Too many large request bodies are arriving at once; retry shortly.",
    undefined,
    { "retry-after": "1", connection: "close" },
  );

/** The refusal of a body past the share of `whose`, told when room comes back at the latest. */
const shareFull = (whose: "client" | "network", retryAfterSeconds: number) =>
  new AppError(
    "RATE_LIMITED",
    `This ${whose === "client" ? "address" : "network"} already has as many large request bodies arriving as it may; send this one when one of them has ended.`,
    undefined,
    { "retry-after": String(retryAfterSeconds), connection: "close" },
  );

const lateBody = (deadlineMs: number) =>
  new AppError(
    "REQUEST_TIMEOUT",
    `The request body did not arrive within ${deadlineMs / 1000} s.`,
    undefined,
    { connection: "close" },
  );

/** The bodies one client or network is being read: their bytes, and when each began. */
interface Holding {
  bytes: number;
  startedAt: Set<{ at: number }>;
}

export function largeBodyReads(
  options: {
    deadlineMs?: number;
    budgetBytes?: number;
    clientBytes?: number;
    networkBytes?: number;
    /** The time in ms, for how soon a refused client may send again. */
    now?: () => number;
  } = {},
): LargeBodyReads {
  const deadlineMs = options.deadlineMs ?? BODY_DEADLINE_MS;
  const budgetBytes = options.budgetBytes ?? LARGE_BODY_BUDGET_BYTES;
  const clientBytes = options.clientBytes ?? LARGE_BODY_CLIENT_BYTES;
  const networkBytes = options.networkBytes ?? LARGE_BODY_NETWORK_BYTES;
  const now = options.now ?? Date.now;
  let reading = 0;
  /** What each client, and each network, is being read, for those with any. */
  const byClient = new Map<string, Holding>();
  const byNetwork = new Map<string, Holding>();
  const take = (held: Map<string, Holding>, key: string, bytes: number, read: { at: number }) => {
    const holding = held.get(key) ?? { bytes: 0, startedAt: new Set() };
    holding.bytes += bytes;
    holding.startedAt.add(read);
    held.set(key, holding);
  };
  const giveBack = (
    held: Map<string, Holding>,
    key: string,
    bytes: number,
    read: { at: number },
  ) => {
    const holding = held.get(key);
    if (!holding) return;
    holding.bytes -= bytes;
    holding.startedAt.delete(read);
    if (holding.startedAt.size === 0) held.delete(key);
  };
  // The oldest of the bodies held has ended by its deadline, whatever its sender does: room comes
  // back by then at the latest, and usually as soon as the sender's own bodies have arrived.
  const secondsUntilRoom = (holding: Holding) => {
    let oldest = Number.POSITIVE_INFINITY;
    for (const read of holding.startedAt) oldest = Math.min(oldest, read.at);
    return Math.max(1, Math.ceil((oldest + deadlineMs - now()) / 1000));
  };

  const accountOf = (client: string) => {
    const network = networkKeyOf(client);
    const read = { at: now() };
    let taken = 0;
    let ended = false;
    return {
      grow(bytes: number) {
        // A read the deadline already answered goes on until the connection closes: it takes
        // nothing more, and stops.
        if (ended) throw lateBody(deadlineMs);
        // Nothing taken is nothing held: a holding with no bytes would never be given back.
        if (bytes <= 0) return;
        const own = byClient.get(client);
        const networks = byNetwork.get(network);
        // One body alone may always be read up to its route's limit; a second is what is bounded.
        // A share is checked before the whole budget: a client past its own is refused for its own
        // bodies, whatever everyone else sends.
        if (own && own.bytes > 0 && own.bytes + bytes > clientBytes) {
          throw shareFull("client", secondsUntilRoom(own));
        }
        if (networks && networks.bytes > 0 && networks.bytes + bytes > networkBytes) {
          throw shareFull("network", secondsUntilRoom(networks));
        }
        if (reading + bytes > budgetBytes) throw budgetFull();
        reading += bytes;
        taken += bytes;
        take(byClient, client, bytes, read);
        take(byNetwork, network, bytes, read);
      },
      end() {
        ended = true;
        reading -= taken;
        if (taken > 0) {
          giveBack(byClient, client, taken, read);
          giveBack(byNetwork, network, taken, read);
        }
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
        timer = setTimeout(() => reject(lateBody(deadlineMs)), deadlineMs);
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
