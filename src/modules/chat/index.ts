/**
 * @module
 * `/api/chat`: one turn (JSON, or Server-Sent Events with `Accept: text/event-stream`), and the
 * caller's conversations; `GET /api/admin/usage` for admins. Callers: a signed-in user or an API
 * key with the `chat` scope. Each principal sees only its own conversations: another's id is 404,
 * exactly like an id that does not exist (so ids cannot be probed), and so is any id that is not
 * one of ours in shape.
 *
 * SSE format: each piece of the reply is `data: {"delta":"…"}`; the last event is
 * `event: done` with `data: {"conversationId":"…","usage":{…}}`. A failure after the stream began
 * (the status is already 200) is `event: error` with the problem document as data.
 */
import { Elysia, t } from "elysia";
import { isCalendarDay } from "../../calendar";
import type { EndsInFlight } from "../../ends-in-flight";
import { AppError, type ErrorCode, problemResponses, toProblem } from "../../errors";
import { cursorOfQuery } from "../../list-cursor";
import { streamedResponse } from "../../plugins/access-log";
import type { AuditLog } from "../../plugins/audit/log";
import type { authPlugin } from "../../plugins/auth";
import { type Principal, principalRef } from "../../plugins/auth/principal";
import { storageRefusal } from "../../plugins/error-handler/storage";
import { EVENT_STREAM_KEY } from "../../plugins/openapi";
import type { RouteClass } from "../../plugins/route-class";
import type { ErrorReporter } from "../../plugins/sentry";
import {
  type ChatBudget,
  decodeUsageCursor,
  encodeUsageCursor,
  ownerRef,
  parseOwnerRef,
  utcDay,
} from "./budget";
import type { ChatOwner, ChatTurn } from "./contract";
import { checkChatMessage } from "./message";
import { messageIdOfCursor } from "./message-cursor";
import {
  ChatBody,
  ChatReply,
  ConversationPage,
  ConversationParams,
  ConversationQuery,
  ConversationView,
  DEFAULT_USAGE_PAGE,
  MessagePageQuery,
  UsagePage,
  UsageQuery,
} from "./model";
import { UpstreamFailure } from "./providers/provider";
import type { ChatService, PreparedTurn, TurnEvent } from "./service";

/** POST /api/chat spends upstream tokens: its own per-principal policy and the 48 KiB body limit. */
export const chatRouteClasses: readonly RouteClass[] = [
  { routes: ["POST /api/chat"], policy: "chat", bodyLimit: "chat" },
  {
    routes: [
      "GET /api/chat/conversations",
      "GET /api/chat/conversations/:id",
      "DELETE /api/chat/conversations/:id",
    ],
  },
  // GET /api/admin/usage is in the admin routes' class (`* /api/admin/*`).
];

const DEFAULT_PAGE = 20;
const DEFAULT_MESSAGE_PAGE = 50;

export interface ChatModuleOptions {
  auth: ReturnType<typeof authPlugin>;
  /**
   * Where each turn in flight (waiting for its first piece, or streaming) is kept until it ends,
   * for the shutdown to end it readably at its drain time: a turn not yet answered is answered 503
   * with Retry-After, a stream ends with an `error` event.
   */
  inFlight: EndsInFlight;
  service: ChatService;
  budget: ChatBudget;
  audit: AuditLog;
  /** Where failures answered without throwing (an `error` event mid-stream) are reported. */
  errors: ErrorReporter;
  now: () => number;
  /**
   * The other keys of a key's rotation chain acting for the same owner (plugins/auth/lineage
   * `keyChain`); none when absent.
   */
  chainOf?: (keyId: string, userId: string | null) => readonly string[];
}

/**
 * Whose conversations a caller holds: a user's own; a key's own and, through `chainOf` (the other
 * keys of its rotation chain acting for the same owner), its predecessors' and successors', so a
 * rotation keeps the history.
 */
export function chatOwnerOf(
  principal: Principal,
  chainOf: (keyId: string, userId: string | null) => readonly string[] = () => [],
): ChatOwner {
  return principal.kind === "user"
    ? { kind: "user", id: principal.id }
    : { kind: "key", id: principal.id, chain: chainOf(principal.id, principal.userId) };
}

/** Whether the client asked for Server-Sent Events (`Accept: text/event-stream`, q > 0). */
export function wantsEventStream(accept: string | null): boolean {
  if (!accept) return false;
  return accept.split(",").some((range) => {
    const [type, ...params] = range.split(";").map((part) => part.trim().toLowerCase());
    if (type !== "text/event-stream") return false;
    const q = params.find((param) => param.startsWith("q="));
    return q === undefined || Number(q.slice(2)) > 0;
  });
}

/**
 * A provider's failure as the client sees it: 503 with Retry-After, or 502. The failure stays
 * attached for the error report (its reason, and `provider` as the upstream tag), never shown.
 * A turn its client aborted (`client`, the request's signal) is 499 CLIENT_CLOSED: logged and
 * counted as the client's leaving, never reported as an error.
 */
export function upstreamError(error: unknown, provider: string, client: AbortSignal): unknown {
  // The client went away before its answer: the provider's abort is that, not a failure of ours.
  if (client.aborted && !(error instanceof UpstreamFailure)) {
    return new AppError("CLIENT_CLOSED", "The client closed the request before its answer.");
  }
  if (!(error instanceof UpstreamFailure)) return error;
  if (error.kind === "refused") {
    return new AppError(
      "UPSTREAM_REFUSED",
      "The chat model refused this message; change it and send it again.",
    ).causedBy(error, provider);
  }
  if (error.kind === "unavailable") {
    return new AppError(
      "UPSTREAM_UNAVAILABLE",
      "The chat model is unavailable right now; try again shortly.",
      undefined,
      { "retry-after": String(Math.max(1, Math.ceil(error.retryAfterSeconds ?? 5))) },
      503,
    ).causedBy(error, provider);
  }
  return new AppError("UPSTREAM_UNAVAILABLE", "The chat model gave an unusable answer.").causedBy(
    error,
    provider,
  );
}

const CHAT_FIELDS = new Set(Object.keys(ChatBody.properties));

/** Requests whose body named a field the chat does not take (refused by plugins/strict-body). */
const unknownFields = new WeakSet<Request>();

function hasUnknownField(body: unknown): boolean {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return false;
  return Object.keys(body).some((key) => !CHAT_FIELDS.has(key));
}

const encoder = new TextEncoder();
const sseEvent = (data: unknown, event?: string) =>
  encoder.encode(`${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(data)}\n\n`);

/** Who asked, for the report of a failure the error handler never sees. */
interface StreamContext {
  request: Request;
  requestId: string;
  /** The id the answer carries (request-id plugin): in an error event's problem document. */
  answeredRequestId: string;
  /** `POST /api/chat`: the route pattern. */
  route: string;
  principal: Principal;
  errors: ErrorReporter;
  inFlight: EndsInFlight;
}

/** Why the shutdown aborts a turn's upstream: told apart from a client that went away. */
const SHUTTING_DOWN = "The service is shutting down";

function shutdownReason(): DOMException {
  return new DOMException(SHUTTING_DOWN, "AbortError");
}

/** The answer to a turn the shutdown ended before its first piece: send it again shortly. */
function restarting(): AppError {
  return new AppError(
    "SERVICE_UNAVAILABLE",
    "The service is restarting; send the message again shortly.",
    undefined,
    { "retry-after": "5" },
  );
}

function endedByShutdown(signal: AbortSignal): boolean {
  return signal.aborted && (signal.reason as { message?: unknown })?.message === SHUTTING_DOWN;
}

/**
 * The turn as Server-Sent Events; the client going away aborts the provider. The first piece is
 * awaited before the response starts, so an upstream that fails at once still gets its real
 * status (502/503 with Retry-After) instead of a 200 with an error event. A failure after that is
 * answered as an `error` event, not thrown: it is reported here, as the error handler would.
 */
async function eventStream(
  service: ChatService,
  turn: PreparedTurn,
  context: StreamContext,
): Promise<Response> {
  const { request, requestId, answeredRequestId } = context;
  const ended = streamedResponse(request);
  const upstream = new AbortController();
  const abort = () => upstream.abort(new DOMException("The client went away", "AbortError"));
  request.signal.addEventListener("abort", abort, { once: true });
  // Gone before this handler ran (it closed right after sending): its abort has fired already, and
  // a listener added now never hears it (probe 86b F3: the upstream was called, the turn stored).
  if (request.signal.aborted) abort();
  const events = service.stream(turn, upstream.signal);
  let closed = false;
  const shutDown = () => upstream.abort(shutdownReason());
  // Waiting for the first piece: the shutdown answers it 503 (below), before anything is sent.
  let forget = context.inFlight.add(shutDown);
  const finish = () => {
    if (closed) return;
    closed = true;
    forget();
    request.signal.removeEventListener("abort", abort);
    ended();
  };
  let pending: IteratorResult<TurnEvent> | null;
  try {
    pending = await events.next();
  } catch (error) {
    finish();
    if (endedByShutdown(upstream.signal)) throw restarting();
    throw upstreamError(error, service.providerName, request.signal);
  }
  forget();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      // At the shutdown's drain timeout: an error event the client can read (503, send again
      // shortly) instead of a cut connection, and the turn's clean-up (what arrived is stored,
      // marked incomplete), as for a client that went away.
      forget = context.inFlight.add(() => {
        // All its text is sent and its storing waits out a lock: the shutdown waits for it
        // (ChatService.storesSettled), and its `done` event follows the commit as ever.
        if (closed || service.isStoring(turn)) return;
        try {
          const { code, detail, status } = restarting();
          controller.enqueue(
            sseEvent(toProblem(code, detail, answeredRequestId, undefined, status), "error"),
          );
          controller.close();
        } finally {
          finish();
          shutDown();
          void events.return(undefined).catch(() => undefined);
        }
      });
    },
    async pull(controller) {
      try {
        const next = pending ?? (await events.next());
        pending = null;
        if (next.done) {
          controller.close();
          finish();
        } else if (next.value.kind === "text") {
          controller.enqueue(sseEvent({ delta: next.value.text }));
        } else {
          const { conversationId, usage } = next.value.turn;
          controller.enqueue(sseEvent({ conversationId, usage }, "done"));
        }
      } catch (error) {
        if (closed || upstream.signal.aborted) return finish();
        const failure = upstreamError(error, service.providerName, request.signal);
        // The text sent, then its storing failed (a lock, a full disk): the same 503 a turn
        // answered whole gets, which the client may send again.
        const refusal = failure instanceof AppError ? null : storageRefusal(failure);
        const [code, detail, status]: [ErrorCode, string, number] =
          failure instanceof AppError
            ? [failure.code, failure.detail, failure.status]
            : refusal
              ? [refusal.code, refusal.detail, 503]
              : ["INTERNAL", "The reply could not be completed.", 500];
        context.errors.report(failure, {
          requestId,
          route: context.route,
          method: request.method,
          principal: principalRef(context.principal),
          status,
          code,
          upstream: failure instanceof AppError ? failure.upstream : undefined,
          request,
        });
        try {
          controller.enqueue(
            sseEvent(toProblem(code, detail, answeredRequestId, undefined, status), "error"),
          );
          controller.close();
        } finally {
          finish();
        }
      }
    },
    async cancel() {
      abort();
      try {
        // Runs the turn's clean-up: what was received is stored, marked incomplete.
        await events.return(undefined);
      } finally {
        finish();
      }
    },
  });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    },
  });
}

export function chatModule(options: ChatModuleOptions) {
  const { service, budget, audit } = options;
  const ownerOf = (principal: Principal) => chatOwnerOf(principal, options.chainOf);
  // A turn that starts a conversation reads none of the chain's: no need to find it.
  const ownerOfTurn = (principal: Principal, conversationId: string | undefined) =>
    conversationId === undefined ? chatOwnerOf(principal) : ownerOf(principal);
  const chat = { scope: "chat" } as const;
  const tags = ["chat"];

  return new Elysia({ name: "palisade.module.chat" })
    .use(options.auth)
    .post(
      "/api/chat",
      async ({ body, principal, request, client, requestId, answeredRequestId, route }) => {
        const checked = checkChatMessage(body.message);
        if (!checked.ok) {
          service.refusedInvalid();
          throw new AppError("VALIDATION_FAILED", "The message is not acceptable.", [
            { field: "body/message", message: checked.rule },
          ]);
        }
        const prepared = await service.prepare(
          {
            owner: ownerOfTurn(principal, body.conversationId),
            message: checked.message,
            conversationId: body.conversationId,
            requestId,
          },
          { ip: client.ip, route: `${request.method} ${route}` },
        );
        if (prepared.kind === "not_found") {
          throw new AppError("NOT_FOUND", "No conversation of yours has that id.");
        }
        if (prepared.kind === "owner_gone") {
          throw new AppError("UNAUTHENTICATED", "These credentials are no longer valid.");
        }
        if (prepared.kind === "over_budget") {
          throw new AppError(
            "QUOTA_EXCEEDED",
            "Today's token budget is spent; it renews at midnight UTC.",
            undefined,
            { "retry-after": String(prepared.retryAfterSeconds) },
          );
        }
        if (prepared.kind === "too_many_turns") {
          throw new AppError(
            "TOO_MANY_TURNS",
            "Too many of your chat turns are still being answered; send this one when one ends.",
            undefined,
            { "retry-after": "1" },
          );
        }
        if (wantsEventStream(request.headers.get("accept"))) {
          // A Response is sent as it is (no response-schema check); the 200 schema is the JSON one.
          return (await eventStream(service, prepared.turn, {
            request,
            requestId,
            answeredRequestId,
            route: `${request.method} ${route}`,
            principal,
            errors: options.errors,
            inFlight: options.inFlight,
          })) as unknown as ChatTurn;
        }
        // The client going away, or the shutdown's drain timeout (answered 503), ends the turn.
        const shutdown = new AbortController();
        const forget = options.inFlight.add(() => shutdown.abort(shutdownReason()));
        try {
          return await service.complete(
            prepared.turn,
            AbortSignal.any([request.signal, shutdown.signal]),
          );
        } catch (error) {
          if (endedByShutdown(shutdown.signal)) throw restarting();
          throw upstreamError(error, service.providerName, request.signal);
        } finally {
          forget();
        }
      },
      {
        auth: chat,
        // A client that sends a field we do not take (a `role`, a `system`) means something we
        // do not do: plugins/strict-body refuses it (422, after auth). Noted here, before
        // validation cleans the body, so the refusal counts as an invalid message.
        transform({ body, request }) {
          if (hasUnknownField(body)) unknownFields.add(request);
        },
        afterResponse({ request, set }) {
          if (set.status === 422 && unknownFields.has(request)) service.refusedInvalid();
        },
        body: ChatBody,
        response: { 200: ChatReply, ...problemResponses(404, 422, 502, 503) },
        detail: {
          tags,
          summary:
            "Send a message; the reply as JSON, or as Server-Sent Events with Accept: text/event-stream",
          [EVENT_STREAM_KEY]:
            'Server-Sent Events, when the request\'s Accept names text/event-stream: `data: {"delta":"…"}` for each piece of the reply, then `event: done` with `data: {"conversationId":"…","usage":{…}}`; a failure after the stream began (the status is 200 already) is `event: error` with the problem document (code, detail, requestId) as data',
        },
      },
    )
    .get(
      "/api/chat/conversations",
      ({ query, principal }) => {
        const cursor = cursorOfQuery(query.cursor);
        return service.list(ownerOf(principal), { cursor, limit: query.limit ?? DEFAULT_PAGE });
      },
      {
        auth: chat,
        query: ConversationQuery,
        response: { 200: ConversationPage, ...problemResponses(422) },
        detail: { tags, summary: "Your conversations, newest first (cursor pagination)" },
      },
    )
    .get(
      "/api/chat/conversations/:id",
      ({ params, principal, query }) => {
        const conversation = service.page(ownerOf(principal), params.id, {
          before: messageIdOfCursor(query.cursor),
          limit: query.limit ?? DEFAULT_MESSAGE_PAGE,
        });
        if (!conversation) throw new AppError("NOT_FOUND", "No conversation of yours has that id.");
        return conversation;
      },
      {
        auth: chat,
        params: ConversationParams,
        query: MessagePageQuery,
        response: { 200: ConversationView, ...problemResponses(404, 422) },
        detail: {
          tags,
          summary:
            "One of your conversations: its newest messages, oldest first; nextCursor pages back",
        },
      },
    )
    .delete(
      "/api/chat/conversations/:id",
      async ({ params, principal, set }) => {
        if (!(await service.delete(ownerOf(principal), params.id))) {
          throw new AppError("NOT_FOUND", "No conversation of yours has that id.");
        }
        set.status = 204;
        return undefined;
      },
      {
        auth: chat,
        params: ConversationParams,
        response: { 204: t.Void({ description: "Deleted" }), ...problemResponses(404) },
        detail: { tags, summary: "Delete one of your conversations and its messages" },
      },
    )
    .get(
      "/api/admin/usage",
      ({ query, principal, request, client, requestId, route }) => {
        const owner = query.principal === undefined ? undefined : parseOwnerRef(query.principal);
        const cursor = query.cursor === undefined ? undefined : decodeUsageCursor(query.cursor);
        // A cursor names its page's day: paging goes on through the day it began.
        const day = cursor?.day ?? query.day ?? utcDay(options.now());
        const invalid = (field: string, message: string) =>
          new AppError("VALIDATION_FAILED", "The filter is not valid.", [{ field, message }]);
        if (owner === null) {
          throw invalid("query/principal", "Expected user:<id>, key:<id> or whatsapp:<id>");
        }
        if (cursor === null) throw invalid("query/cursor", "Expected the nextCursor of a page");
        if (cursor && query.day !== undefined && query.day !== cursor.day) {
          throw invalid("query/cursor", "The cursor is of another day than day");
        }
        if (!isCalendarDay(day)) {
          throw invalid("query/day", "Expected a calendar day, YYYY-MM-DD");
        }
        audit.record({
          type: "admin.usage.queried",
          outcome: "success",
          actor: principalRef(principal),
          ip: client.ip,
          route: `${request.method} ${route}`,
          requestId,
          // What was viewed: the day and, when one was asked for, the principal (both checked
          // above; a cursor is only a position in the day).
          detail: {
            filters: Object.keys(query).sort().join(","),
            day,
            ...(owner ? { principal: ownerRef(owner) } : {}),
          },
        });
        const page = budget.usagePage(day, owner, {
          after: cursor?.after,
          limit: query.limit ?? DEFAULT_USAGE_PAGE,
        });
        return {
          day,
          budget: budget.dailyTokens,
          usage: page.rows,
          nextCursor: page.next ? encodeUsageCursor(day, page.next) : null,
        };
      },
      {
        auth: { role: "admin" },
        query: UsageQuery,
        response: { 200: UsagePage, ...problemResponses(422) },
        detail: { tags: ["admin"], summary: "Chat token usage per principal for a UTC day" },
      },
    );
}
