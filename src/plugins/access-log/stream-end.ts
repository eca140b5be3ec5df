/**
 * @module
 * When a streamed response really ends. Elysia runs `onAfterResponse` once the handler's Response
 * is built, which for a streamed body (Server-Sent Events) is when the first byte can go, not when
 * the last one went: the access line and `http_request_duration_seconds` would record the time to
 * first byte. A handler that streams its body registers the request here and calls the returned
 * function when the stream closes, errs or is cancelled; the access log waits for it.
 */
const ends = new WeakMap<Request, Promise<void>>();

/** Marks `request` as streamed; call the returned function once its body has ended (any way). */
export function streamedResponse(request: Request): () => void {
  let end!: () => void;
  ends.set(
    request,
    new Promise<void>((resolve) => {
      end = resolve;
    }),
  );
  return end;
}

/** The end of a streamed request's body, or undefined for an ordinary response. */
export function streamEndOf(request: Request): Promise<void> | undefined {
  return ends.get(request);
}
