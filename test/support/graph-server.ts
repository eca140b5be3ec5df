/**
 * A local WhatsApp Cloud API (Graph) server speaking the real wire protocol, on 127.0.0.1:0:
 * `POST /{version}/{phone_number_id}/messages` with `Authorization: Bearer <token>` and the
 * Cloud API body, answered with Graph's shape
 * `{messaging_product:"whatsapp", contacts:[{input, wa_id}], messages:[{id:"wamid…"}]}` or Graph's
 * error body `{error:{message, type, code, fbtrace_id}}`. Failures are scriptable (the next N
 * answers), answers may be delayed, and every accepted message is recorded. A message counts as
 * accepted only when its 2xx answer is written: a client that went away first did not get it sent.
 */

export interface SentMessage {
  phoneNumberId: string;
  to: string;
  body: string;
  id: string;
  authorization: string;
}

export interface ScriptedAnswer {
  status: number;
  /** Graph's error code in the error body (defaults: 1 for 5xx, 100 for 4xx). */
  code?: number;
  headers?: Record<string, string>;
  /** The error body's message (default "scripted failure"). */
  message?: string;
}

export interface GraphServer {
  /** The base URL, with a version segment, as WHATSAPP_API_URL. */
  url: string;
  readonly token: string;
  /** Messages accepted (a 2xx written), in order. */
  readonly sent: SentMessage[];
  /** Every request that reached the messages route, accepted or not. */
  readonly received: { phoneNumberId: string; to: string; body: string; status: number }[];
  /** The next answers, in order, before the normal 200s resume (a 2xx one: a normal 200). */
  failNext(...answers: ScriptedAnswer[]): void;
  /** Every answer waits this long first (0 by default). */
  delayMs: number;
  /** Resolves once `count` requests have reached the messages route. */
  waitForRequests(count: number, timeoutMs?: number): Promise<void>;
  /** Resolves once `count` messages have been accepted. */
  waitForSent(count: number, timeoutMs?: number): Promise<void>;
  close(): void;
}

function graphError(
  status: number,
  code: number,
  message: string,
  headers?: Record<string, string>,
) {
  return Response.json(
    {
      error: {
        message,
        type: status === 401 ? "OAuthException" : "GraphMethodException",
        code,
        fbtrace_id: `A${crypto.randomUUID().replaceAll("-", "").slice(0, 22)}`,
      },
    },
    { status, headers },
  );
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`graph server: timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

export function startGraphServer(options: { token?: string; version?: string } = {}): GraphServer {
  const token = options.token ?? "test-graph-token";
  const version = options.version ?? "v21.0";
  const sent: SentMessage[] = [];
  const received: GraphServer["received"] = [];
  const script: ScriptedAnswer[] = [];
  let counter = 0;

  const state = {
    delayMs: 0,
  };

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      const url = new URL(request.url);
      const match = /^(?:\/v[0-9]+\.[0-9]+)?\/([0-9]+)\/messages$/.exec(url.pathname);
      if (request.method !== "POST" || !match) {
        return graphError(400, 100, "Unsupported request - method type or path");
      }
      const phoneNumberId = match[1]!;
      const authorization = request.headers.get("authorization") ?? "";
      interface Payload {
        messaging_product?: unknown;
        to?: unknown;
        type?: unknown;
        text?: { body?: unknown };
      }
      let payload: Payload | null;
      try {
        payload = (await request.json()) as Payload;
      } catch {
        payload = null;
      }
      const to = typeof payload?.to === "string" ? payload.to : "";
      const body = typeof payload?.text?.body === "string" ? payload.text.body : "";
      const answer = (status: number) => received.push({ phoneNumberId, to, body, status });

      if (state.delayMs > 0) await Bun.sleep(state.delayMs);
      if (request.signal.aborted) return new Response(null, { status: 499 });

      if (authorization !== `Bearer ${token}`) {
        answer(401);
        return graphError(401, 190, "Invalid OAuth access token - Cannot parse access token");
      }
      if (
        payload?.messaging_product !== "whatsapp" ||
        payload.type !== "text" ||
        !/^[0-9]{1,32}$/.test(to) ||
        body === "" ||
        body.length > 4096
      ) {
        answer(400);
        return graphError(400, 100, "(#100) Invalid parameter");
      }
      const scripted = script.shift();
      // A 2xx in the script is an ordinary acceptance: what lets a failure come after successes.
      if (scripted && scripted.status >= 300) {
        answer(scripted.status);
        const code = scripted.code ?? (scripted.status >= 500 ? 1 : 100);
        return graphError(
          scripted.status,
          code,
          scripted.message ?? "scripted failure",
          scripted.headers,
        );
      }
      counter++;
      const id = `wamid.HBgL${phoneNumberId}${String(counter).padStart(6, "0")}`;
      answer(200);
      sent.push({ phoneNumberId, to, body, id, authorization });
      return Response.json({
        messaging_product: "whatsapp",
        contacts: [{ input: to, wa_id: to }],
        messages: [{ id }],
      });
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}/${version}`,
    token,
    sent,
    received,
    failNext(...answers) {
      script.push(...answers);
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(value: number) {
      state.delayMs = value;
    },
    waitForRequests: (count, timeoutMs = 10_000) =>
      until(() => received.length >= count, timeoutMs, `${count} requests`),
    waitForSent: (count, timeoutMs = 10_000) =>
      until(() => sent.length >= count, timeoutMs, `${count} sent messages`),
    close() {
      server.stop(true);
    },
  };
}
