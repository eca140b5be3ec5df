/**
 * @module
 * fetch with the response's body bounded in bytes as it arrives, for the upstreams Palisade reads
 * (the chat provider, Stripe, Graph): each is at a configured URL, and an answer without end (a
 * broken or hostile server, or anyone on the path of an `http://` one) was read into memory until
 * the request's timeout, 1.2 GB in 13 s from one chat turn (probe 54a F1).
 *
 * A body past its bound errors with UpstreamTooLarge where it is read, and the upstream request is
 * closed. A stream (`text/event-stream`) is bounded whole and line by line, since an SSE decoder
 * holds a line until its end.
 */

/** An upstream's answer (not a stream) did not arrive whole within its deadline. */
export class UpstreamBodyTimeout extends Error {
  constructor() {
    super("upstream response not whole within its deadline");
    this.name = "UpstreamBodyTimeout";
  }
}

/** An upstream's answer came compressed though only an uncompressed one was asked for. */
export class UpstreamEncodingRefused extends Error {
  constructor() {
    super("upstream response compressed though asked for identity");
    this.name = "UpstreamEncodingRefused";
  }
}

/** An upstream's answer passed its byte bound: it is not read further. */
export class UpstreamTooLarge extends Error {
  constructor() {
    super("upstream response longer than its bound");
    this.name = "UpstreamTooLarge";
  }
}

export interface BodyBounds {
  /** Bytes of a body, or of one line of a stream. */
  bodyBytes: number;
  /** Bytes of a whole stream; `bodyBytes` when absent. */
  streamBytes?: number;
  /**
   * Milliseconds from the request to the end of an answer that is not a stream (a reply, or an
   * error's body, which the OpenAI SDK reads with no timer of its own: a body sent a byte at a time
   * held a turn for minutes, probe 56a F1); past it the body errors with UpstreamBodyTimeout.
   */
  bodyDeadlineMs?: number;
}

const LINE_FEED = 10;

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export function boundedFetch(bounds: BodyBounds, base: Fetch = fetch): typeof fetch {
  const bounded = async (input: string | URL | Request, init?: RequestInit) => {
    const startedAt = performance.now();
    // Uncompressed answers only, and none decompressed: Bun inflates a network chunk whole before
    // any bound here sees it, so a small gzip body could grow to gigabytes in one step (probe 56a
    // note: 78–200 MB from a Graph look-alike's answer cut at 64 KiB).
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : {}));
    headers.set("accept-encoding", "identity");
    const response = await base(input, { ...init, headers, decompress: false } as RequestInit);
    if (response.body === null) return response;
    const encoding = response.headers.get("content-encoding")?.trim().toLowerCase();
    if (encoding !== undefined && encoding !== "" && encoding !== "identity") {
      await response.body.cancel().catch(() => undefined);
      const refused = new ReadableStream<Uint8Array>({
        start: (controller) => controller.error(new UpstreamEncodingRefused()),
      });
      return new Response(refused, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
    }
    // An error's answer is never a stream, whatever it is labelled: read whole, under the deadline
    // (probe 57a F2: a 500 labelled text/event-stream trickled without one).
    const mediaType = (response.headers.get("content-type") ?? "").split(";")[0]!.trim();
    const streaming = response.ok && mediaType.toLowerCase() === "text/event-stream";
    const limit = streaming ? (bounds.streamBytes ?? bounds.bodyBytes) : bounds.bodyBytes;
    let total = 0;
    let line = 0;
    let deadline: ReturnType<typeof setTimeout> | undefined;
    const body = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        start(controller) {
          if (streaming || bounds.bodyDeadlineMs === undefined) return;
          const left = Math.max(0, startedAt + bounds.bodyDeadlineMs - performance.now());
          deadline = setTimeout(() => controller.error(new UpstreamBodyTimeout()), left);
        },
        flush() {
          clearTimeout(deadline);
        },
        transform(chunk, controller) {
          total += chunk.byteLength;
          if (streaming) {
            const first = chunk.indexOf(LINE_FEED);
            if (line + (first < 0 ? chunk.byteLength : first) > bounds.bodyBytes) {
              return controller.error(new UpstreamTooLarge());
            }
            line =
              first < 0
                ? line + chunk.byteLength
                : chunk.byteLength - chunk.lastIndexOf(LINE_FEED) - 1;
          }
          if (total > limit) {
            clearTimeout(deadline);
            return controller.error(new UpstreamTooLarge());
          }
          controller.enqueue(chunk);
        },
      }),
    );
    return new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
  return Object.assign(bounded, { preconnect: fetch.preconnect });
}
