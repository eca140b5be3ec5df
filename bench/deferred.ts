/**
 * @module
 * The work a request leaves for the next event-loop turn, counted in the figure of the requests that
 * left it. Elysia runs `onAfterResponse` hooks (Palisade's access log and request metrics) in a
 * `setImmediate`, and an in-process loop over `app.handle` whose requests never wait on I/O runs in
 * microtasks alone: those hooks then wait until every request in flight is waiting too — at the end
 * of the loop, or whenever the rate limiter's store makes the requests wait a turn. A clock stopped
 * before they have run leaves them out of the figure, or puts them into whichever stage happens to
 * make the loop turn: the defence chain's table gave the rate limiter ~1.5 µs of the access log's
 * cost that way (3.5 µs instead of ~2).
 */
export async function settleDeferredWork(): Promise<void> {
  // Two turns: what the first turn's callbacks schedule runs in the next one.
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
}
