/**
 * An answer a stage gives before any route runs, thrown rather than returned. Elysia skips its
 * after-response hooks for a Response returned from `onRequest`, so such answers would be missing
 * from the access log and the request metrics; thrown, they pass through the one error handler,
 * which sends them as they are, and the last stage sees them like any other response.
 */
export class EarlyAnswer extends Error {
  constructor(readonly status: number) {
    super(`early answer ${status}`);
    this.name = "EarlyAnswer";
  }
}
