/**
 * A local server that speaks Sentry's ingestion protocol: `POST /api/<project>/envelope/` with a
 * newline-delimited envelope (a header line, then an item header and its payload per item, the
 * payload `length` bytes long when the item header says so, else up to the next newline), the body
 * possibly gzip- or deflate-encoded. It keeps every item, parsed, with the raw decoded text so a
 * test can search the bytes that were actually sent.
 */

export interface EnvelopeItem {
  type: string;
  payload: Record<string, unknown>;
}

export interface ReceivedEnvelope {
  project: string;
  header: Record<string, unknown>;
  items: EnvelopeItem[];
  /** The decoded body, exactly as sent. */
  raw: string;
  /** The `sentry_key` the SDK authenticated with (query or `X-Sentry-Auth`). */
  key: string | null;
}

export interface SentryServer {
  /** A DSN pointing at this server, for project `projectId`. */
  dsn(projectId?: string): string;
  envelopes: ReceivedEnvelope[];
  /** Every `event` item received (errors), in order. */
  events(): Record<string, unknown>[];
  /**
   * The status every envelope is answered with while set (403: a revoked key or a deleted project,
   * as Sentry answers them), instead of 200; a refused envelope is not recorded.
   */
  refuseWith: number | null;
  /** While set, envelopes are read and never answered (a host that accepts and hangs). */
  hang: boolean;
  /** How long each envelope waits for its answer (a slow ingestion), 0 by default. */
  delayMs: number;
  stop(): void;
}

const PUBLIC_KEY = "0123456789abcdef0123456789abcdef";

function decode(body: Uint8Array<ArrayBuffer>, encoding: string | null): Uint8Array {
  if (encoding === "gzip") return Bun.gunzipSync(body);
  if (encoding === "deflate") return Bun.inflateSync(body);
  return body;
}

/** Splits an envelope into its header and items (see develop.sentry.dev, "Envelopes"). */
export function parseEnvelope(bytes: Uint8Array): {
  header: Record<string, unknown>;
  items: EnvelopeItem[];
} {
  const text = new TextDecoder();
  let offset = 0;
  const line = (): string | null => {
    if (offset >= bytes.length) return null;
    let end = bytes.indexOf(0x0a, offset);
    if (end === -1) end = bytes.length;
    const value = text.decode(bytes.subarray(offset, end));
    offset = end + 1;
    return value;
  };
  const header = JSON.parse(line() ?? "{}") as Record<string, unknown>;
  const items: EnvelopeItem[] = [];
  for (;;) {
    const itemHeaderText = line();
    if (itemHeaderText === null) break;
    if (itemHeaderText.trim() === "") continue;
    const itemHeader = JSON.parse(itemHeaderText) as { type: string; length?: number };
    let payloadText: string;
    if (typeof itemHeader.length === "number") {
      payloadText = text.decode(bytes.subarray(offset, offset + itemHeader.length));
      offset += itemHeader.length + 1;
    } else {
      payloadText = line() ?? "";
    }
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(payloadText) as Record<string, unknown>;
    } catch {
      payload = { raw: payloadText };
    }
    items.push({ type: itemHeader.type, payload });
  }
  return { header, items };
}

export function startSentryServer(): SentryServer {
  const envelopes: ReceivedEnvelope[] = [];
  const state = { refuseWith: null as number | null, hang: false, delayMs: 0 };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const url = new URL(request.url);
      const match = /^\/api\/([^/]+)\/envelope\/?$/.exec(url.pathname);
      if (request.method !== "POST" || !match) return new Response("not found", { status: 404 });
      if (state.hang) {
        await request.arrayBuffer();
        return new Promise<Response>(() => {});
      }
      if (state.delayMs > 0) await Bun.sleep(state.delayMs);
      if (state.refuseWith !== null) {
        return Response.json({ detail: "event submission rejected" }, { status: state.refuseWith });
      }
      const body = decode(
        new Uint8Array(await request.arrayBuffer()),
        request.headers.get("content-encoding"),
      );
      const { header, items } = parseEnvelope(body);
      const auth = request.headers.get("x-sentry-auth") ?? "";
      const key =
        url.searchParams.get("sentry_key") ?? /sentry_key=([^,\s]+)/.exec(auth)?.[1] ?? null;
      envelopes.push({
        project: match[1]!,
        header,
        items,
        raw: new TextDecoder().decode(body),
        key,
      });
      return Response.json({ id: header.event_id ?? null });
    },
  });
  return {
    dsn: (projectId = "42") => `http://${PUBLIC_KEY}@127.0.0.1:${server.port}/${projectId}`,
    envelopes,
    events: () =>
      envelopes.flatMap((e) => e.items.filter((i) => i.type === "event").map((i) => i.payload)),
    get refuseWith() {
      return state.refuseWith;
    },
    set refuseWith(status: number | null) {
      state.refuseWith = status;
    },
    get hang() {
      return state.hang;
    },
    set hang(value: boolean) {
      state.hang = value;
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(value: number) {
      state.delayMs = value;
    },
    stop: () => server.stop(true),
  };
}
