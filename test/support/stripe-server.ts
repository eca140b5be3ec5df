/**
 * A local Stripe: Bun.serve on 127.0.0.1:0 speaking the REST shape the official SDK uses —
 * form-encoded bodies with bracket keys (`metadata[k]=v`), `Authorization: Bearer sk_test_…`,
 * `Idempotency-Key` honoured as Stripe does (same key and parameters: the first response again with
 * `Idempotent-Replayed: true`, a 500 included — Stripe keeps the error of a request it began, and
 * answers it again with `Stripe-Should-Retry: false`; same key, other parameters: 400
 * `idempotency_error`), JSON objects
 * (`pi_…` payment intents with `pi_…_secret_…` client secrets, `re_…` refunds) and Stripe's error
 * body `{error: {type, code, message}}`. Failures and odd answers are scripted per test; every
 * request is counted.
 */
import type { Server } from "bun";

export interface RecordedCall {
  method: string;
  path: string;
  params: Record<string, string>;
  idempotencyKey: string | null;
  replayed: boolean;
}

export interface ScriptedFailure {
  status: number;
  type?: string;
  code?: string;
  message?: string;
  /** Sent as `Stripe-Should-Retry`, which the SDK obeys. */
  shouldRetry?: boolean;
  /**
   * Whether Stripe keeps this error under the request's idempotency key and answers it again to the
   * key's next requests: by default a 500 (Stripe began the request), not a 429, 502, 503 or 4xx
   * (answered before anything ran).
   */
  kept?: boolean;
  /**
   * The request runs (an intent or a refund is made) and its answer is this error all the same: a
   * 500 after Stripe did the work.
   */
  executed?: boolean;
  /** The body is this many bytes that never close the JSON (an answer without end), not the error. */
  floodBytes?: number;
}

interface Stored {
  paramsKey: string;
  status: number;
  body: unknown;
}

export interface FakeStripe {
  url: string;
  calls: RecordedCall[];
  /** Calls that reached the handler (not replays), per path. */
  created(path: string): number;
  /** The next `count` requests to `path` fail like this. */
  failNext(path: string, failure: ScriptedFailure, count?: number): void;
  /** The next payment intent is answered with these fields changed (a response we must refuse). */
  tamperNextIntent(fields: Record<string, unknown>): void;
  /** The next refunds made are answered with these statuses, one each (then `succeeded`). */
  refundStatusNext(...statuses: string[]): void;
  /** The next refund made is answered with these fields changed (not as stored). */
  tamperNextRefund(fields: Record<string, unknown>): void;
  /** Every answer waits this long first (lets concurrent requests overlap). */
  delayMs: number;
  /**
   * The next request to `path` is held once it has arrived until `release()`: a race made
   * deterministic (`reached` resolves when Stripe has the request).
   */
  holdNext(path: string): { reached: Promise<void>; release(): void };
  intents: Map<string, Record<string, unknown>>;
  /** Of the flooding answers (`floodBytes`): bytes handed to their connections, and how many the client closed. */
  flooded: { bytesSent: number; cancelled: number };
  stop(): void;
}

const SECRET_KEY = /^Bearer sk_test_[A-Za-z0-9_]+$/;

function randomId(length = 24): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

/** `metadata[a]=b` → `{ "metadata[a]": "b" }`, kept flat: enough to compare and to read back. */
function parseForm(text: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const [key, value] of new URLSearchParams(text)) params[key] = value;
  return params;
}

function metadataOf(params: Record<string, string>): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(params)) {
    const match = /^metadata\[(.*)\]$/.exec(key);
    if (match) metadata[match[1]!] = value;
  }
  return metadata;
}

/** The body of Stripe's answer to a request it refuses, as `handle` returns one. */
function invalidRequest(status: number, code: string, message: string) {
  return { status, body: { error: { type: "invalid_request_error", code, message } } };
}

const NO_SUCH_INTENT = invalidRequest(404, "resource_missing", "No such payment_intent");

function stripeError(status: number, type: string, code: string, message: string, retry?: boolean) {
  const headers: Record<string, string> = { "request-id": `req_${randomId(14)}` };
  if (retry !== undefined) headers["stripe-should-retry"] = String(retry);
  return Response.json({ error: { type, code, message } }, { status, headers });
}

function floodingAnswer(
  status: number,
  bytes: number,
  flooded: { bytesSent: number; cancelled: number },
): Response {
  const block = new Uint8Array(64 * 1024).fill(97);
  let head: Uint8Array | null = new TextEncoder().encode('{"error":{"message":"');
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (head !== null) {
        controller.enqueue(head);
        head = null;
      } else if (sent >= bytes) {
        controller.close();
      } else {
        controller.enqueue(block);
        sent += block.byteLength;
        flooded.bytesSent += block.byteLength;
      }
    },
    cancel() {
      flooded.cancelled++;
    },
  });
  return new Response(body, { status, headers: { "content-type": "application/json" } });
}

export function startFakeStripe(): FakeStripe {
  const calls: RecordedCall[] = [];
  const flooded = { bytesSent: 0, cancelled: 0 };
  const stored = new Map<string, Stored>();
  const failures = new Map<string, ScriptedFailure[]>();
  const intents = new Map<string, Record<string, unknown>>();
  let tamper: Record<string, unknown> | null = null;
  let tamperRefund: Record<string, unknown> | null = null;
  const refundStatuses: string[] = [];
  /** Every refund made, oldest first (`GET /v1/refunds` lists a payment's, newest first). */
  const refunds: Record<string, unknown>[] = [];

  const state = {
    delayMs: 0,
  };

  const handle = (method: string, path: string, params: Record<string, string>) => {
    if (method === "POST" && path === "/v1/payment_intents") {
      const amount = Number(params.amount);
      if (!Number.isInteger(amount) || amount < 50) {
        return {
          status: 400,
          body: {
            error: {
              type: "invalid_request_error",
              code: "amount_too_small",
              message: "Amount must be at least 50 cents",
            },
          },
        };
      }
      const id = `pi_${randomId()}`;
      const intent: Record<string, unknown> = {
        id,
        object: "payment_intent",
        amount,
        currency: params.currency,
        status: "requires_payment_method",
        client_secret: `${id}_secret_${randomId()}`,
        description: params.description ?? null,
        receipt_email: params.receipt_email ?? null,
        metadata: metadataOf(params),
        created: Math.floor(Date.now() / 1000),
        livemode: false,
      };
      if (tamper) {
        Object.assign(intent, tamper);
        tamper = null;
      }
      intents.set(String(intent.id), intent);
      return { status: 200, body: intent };
    }
    const cancel = /^\/v1\/payment_intents\/([^/]+)\/cancel$/.exec(path);
    if (method === "POST" && cancel) {
      const intent = intents.get(decodeURIComponent(cancel[1]!));
      if (!intent) {
        return NO_SUCH_INTENT;
      }
      // As Stripe: an intent paid, being paid or canceled cannot be canceled.
      if (["succeeded", "processing", "canceled"].includes(String(intent.status))) {
        return invalidRequest(
          400,
          "payment_intent_unexpected_state",
          `You cannot cancel this PaymentIntent because it has a status of ${intent.status}.`,
        );
      }
      intent.status = "canceled";
      intent.cancellation_reason = params.cancellation_reason ?? null;
      intent.canceled_at = Math.floor(Date.now() / 1000);
      return { status: 200, body: intent };
    }
    if (method === "POST" && path === "/v1/refunds") {
      const intent = intents.get(params.payment_intent ?? "");
      if (!intent) {
        return NO_SUCH_INTENT;
      }
      const amount = params.amount === undefined ? Number(intent.amount) : Number(params.amount);
      const refund = {
        id: `re_${randomId()}`,
        object: "refund",
        amount,
        currency: intent.currency,
        payment_intent: intent.id,
        status: refundStatuses.shift() ?? "succeeded",
        metadata: metadataOf(params),
        created: Math.floor(Date.now() / 1000),
      };
      refunds.push(refund);
      const answered = tamperRefund ? { ...refund, ...tamperRefund } : refund;
      tamperRefund = null;
      return { status: 200, body: answered };
    }
    if (method === "GET" && path === "/v1/refunds") {
      const limit = Math.min(Number(params.limit ?? 10), 100);
      const ofIntent = refunds
        .filter(
          (refund) =>
            params.payment_intent === undefined || refund.payment_intent === params.payment_intent,
        )
        .reverse();
      return {
        status: 200,
        body: {
          object: "list",
          data: ofIntent.slice(0, limit),
          has_more: ofIntent.length > limit,
          url: "/v1/refunds",
        },
      };
    }
    return {
      status: 404,
      body: {
        error: {
          type: "invalid_request_error",
          code: "resource_missing",
          message: "No such route",
        },
      },
    };
  };

  const holds = new Map<string, { arrived: () => void; released: Promise<void> }>();
  const server: Server<undefined> = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      const url = new URL(request.url);
      // The SDK sends a GET's parameters in the query string, a POST's in the form body.
      const params = parseForm(
        request.method === "GET" ? url.search.slice(1) : await request.text(),
      );
      if (state.delayMs > 0) await Bun.sleep(state.delayMs);
      const hold = holds.get(url.pathname);
      if (hold) {
        holds.delete(url.pathname);
        hold.arrived();
        await hold.released;
      }
      if (!SECRET_KEY.test(request.headers.get("authorization") ?? "")) {
        return stripeError(
          401,
          "invalid_request_error",
          "api_key_invalid",
          "Invalid API Key provided",
        );
      }
      const idempotencyKey = request.headers.get("idempotency-key");
      const call: RecordedCall = {
        method: request.method,
        path: url.pathname,
        params,
        idempotencyKey,
        replayed: false,
      };
      calls.push(call);
      const paramsKey = `${request.method} ${url.pathname} ${JSON.stringify(Object.entries(params).sort())}`;
      if (idempotencyKey !== null) {
        const previous = stored.get(idempotencyKey);
        if (previous) {
          if (previous.paramsKey !== paramsKey) {
            return stripeError(
              400,
              "idempotency_error",
              "idempotency_key_in_use",
              "Keys for idempotent requests can only be used with the same parameters they were first used with.",
              false,
            );
          }
          call.replayed = true;
          const headers: Record<string, string> = { "idempotent-replayed": "true" };
          if (previous.status >= 500) headers["stripe-should-retry"] = "false";
          return Response.json(previous.body, { status: previous.status, headers });
        }
      }
      const scripted = failures.get(url.pathname)?.shift();
      if (scripted?.floodBytes !== undefined) {
        return floodingAnswer(scripted.status, scripted.floodBytes, flooded);
      }
      if (scripted) {
        const type =
          scripted.type ?? (scripted.status >= 500 ? "api_error" : "invalid_request_error");
        const code = scripted.code ?? "scripted_failure";
        const message = scripted.message ?? "Scripted failure";
        if (scripted.executed) handle(request.method, url.pathname, params);
        // Stripe keeps no idempotent result for a request it did not execute; a 500's, it does.
        if (idempotencyKey !== null && (scripted.kept ?? scripted.status === 500)) {
          stored.set(idempotencyKey, {
            paramsKey,
            status: scripted.status,
            body: { error: { type, code, message } },
          });
        }
        return stripeError(scripted.status, type, code, message, scripted.shouldRetry);
      }
      const answer = handle(request.method, url.pathname, params);
      if (idempotencyKey !== null && answer.status < 500) {
        stored.set(idempotencyKey, { paramsKey, ...answer });
      }
      return Response.json(answer.body, { status: answer.status });
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}`,
    calls,
    flooded,
    // A GET (a list read) makes nothing.
    created: (path) =>
      calls.filter((c) => c.path === path && c.method !== "GET" && !c.replayed).length,
    failNext(path, failure, count = 1) {
      const list = failures.get(path) ?? [];
      for (let i = 0; i < count; i++) list.push(failure);
      failures.set(path, list);
    },
    tamperNextIntent(fields) {
      tamper = fields;
    },
    refundStatusNext(...statuses) {
      refundStatuses.push(...statuses);
    },
    tamperNextRefund(fields) {
      tamperRefund = fields;
    },
    holdNext(path) {
      const reached = Promise.withResolvers<void>();
      const released = Promise.withResolvers<void>();
      holds.set(path, { arrived: reached.resolve, released: released.promise });
      return { reached: reached.promise, release: () => released.resolve() };
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(ms: number) {
      state.delayMs = ms;
    },
    intents,
    stop: () => server.stop(true),
  };
}
