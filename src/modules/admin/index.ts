/**
 * @module
 * `/api/admin`: API keys (create, list, revoke, rotate), the audit log, IP blocks. Every route
 * needs an admin (or a key with the `admin` scope), and every action is audited with the acting
 * principal.
 */

import { Elysia, t } from "elysia";
import { DAY_MS } from "../../clock";
import { storedValueText, timeOrNull } from "../../db/stored-values";
import { AppError, problemResponses } from "../../errors";
import { cursorOfQuery, type ListCursor } from "../../list-cursor";
import { type AuditEventType, isRecordedAuditType } from "../../plugins/audit/events";
import type { AuditLog } from "../../plugins/audit/log";
import { type authPlugin, type CredentialStanding, lostAdmin } from "../../plugins/auth";
import type { AuthMetrics } from "../../plugins/auth/metrics";
import { ActorGone, type Principal, principalRef } from "../../plugins/auth/principal";
import { type Address, formatAddress, parseIp } from "../../plugins/client-ip/address";
import { blockSubjectOf, clientKeyOf, siteKeyOf, siteOfKey } from "../../plugins/client-ip/resolve";
import { blockReasonProblem, type IpBlockService } from "../../plugins/ip-block/service";
import type { RequestState } from "../../plugins/request-state";
import type { RouteClass } from "../../plugins/route-class";
import {
  type ApiKeyRecord,
  type ApiKeyService,
  DEFAULT_ROTATION_GRACE_MS,
  earliest,
  type KeyRefusal,
  KeyRefused,
  keyNameProblem,
} from "../auth/api-keys";
import { queryAuditEvents } from "./audit-query";
import {
  ADMIN_PAGE,
  ApiKeyList,
  AuditPage,
  AuditQuery,
  BlockList,
  BlockView,
  CreatedKey,
  IdParams,
  NewBlockBody,
  NewKeyBody,
  PageQuery,
  RotateBody,
  SecuritySummaryQuery,
  SecuritySummaryView,
} from "./model";
import { DEFAULT_TOP, parseSince, presentSummary, summarizeSecurity } from "./security-summary";

export interface AdminModuleOptions {
  auth: ReturnType<typeof authPlugin>;
  apiKeys: ApiKeyService;
  /**
   * The request's credential as the database reads it (the auth feature's): whether it is still an
   * admin's is asked again inside each change's transaction, which an erasure runs wholly before
   * or after.
   */
  standing: CredentialStanding;
  ipBlocks: IpBlockService;
  audit: AuditLog;
  /** Where a credential that ended while its request was under way is counted. */
  authMetrics: AuthMetrics;
  sqlite: import("bun:sqlite").Database;
  now: () => number;
}

/**
 * A key as admins see it: its owner (or null for an operator key), never its secret; `tampered`
 * when the key or its owner's account fails its seal, `lineageTampered` and `rotationTampered`
 * when its lineage or its rotation mark does (a key just made or rotated never does).
 */
function view(
  record: ApiKeyRecord,
  seals = { tampered: false, lineageTampered: false, rotationTampered: false },
) {
  const { userId, ownerEmail } = record;
  // As the file holds them: a row written there with text for a time or a BLOB for a name is
  // shown (with `tampered`), where its answer failing the schema made every page holding it 500
  // and hid every key (probe 46b F1).
  return {
    id: storedValueText(record.id) ?? "",
    name: storedValueText(record.name) ?? "",
    prefix: storedValueText(record.prefix) ?? "",
    scopes: record.scopes,
    createdAt: timeOrNull(record.createdAt),
    expiresAt: timeOrNull(record.expiresAt),
    lastUsedAt: timeOrNull(record.lastUsedAt),
    revokedAt: timeOrNull(record.revokedAt),
    replacedBy: storedValueText(record.replacedBy),
    origin: KEY_ORIGINS.includes(record.origin) ? record.origin : null,
    owner:
      userId === null
        ? null
        : { id: storedValueText(userId) ?? "", email: storedValueText(ownerEmail) ?? "" },
    ...seals,
  };
}

const KEY_ORIGINS: readonly unknown[] = ["api", "bootstrap"];

/** A list's page as its query asks: 422 for a cursor this API never gave (or of another list's ids). */
function pageOf(
  query: { cursor?: string; limit?: number },
  id?: RegExp,
): { cursor?: ListCursor; limit: number } {
  return { cursor: cursorOfQuery(query.cursor, id), limit: query.limit ?? ADMIN_PAGE };
}

/**
 * A list cursor's id that is a row's integer id or rowid, written out: any 64-bit integer, as the file
 * may hold (a negative one, one past 2^53 included: probe 48a F1).
 */
const ROWID = /^-?\d{1,19}$/;

/** Every admin route is on the default policy (per principal). */
export const adminRouteClasses: readonly RouteClass[] = [{ routes: ["* /api/admin/*"] }];

/** 422 naming `field` when its text breaks a rule the schema cannot state (`problem`). */
function refuseText(field: string, problem: string | null): void {
  if (problem === null) return;
  throw new AppError("VALIDATION_FAILED", "The request body is invalid.", [
    { field, message: problem },
  ]);
}

/** `text` as an address, as the blocks and the audit filter read one; else 422 naming `field`. */
function addressOf(text: string, field: string, detail: string): Address {
  const address = parseIp(text);
  if (address === null) {
    throw new AppError("VALIDATION_FAILED", detail, [
      { field, message: "Expected a canonical dotted-decimal IPv4 or an IPv6 address" },
    ]);
  }
  return address;
}

export function adminModule(options: AdminModuleOptions) {
  const { apiKeys, ipBlocks, audit } = options;
  /**
   * The answer to a change whose credential was revoked, logged out, demoted or erased after the
   * auth stage let its request by (in this process, or another not yet told): the auth stage's
   * answer, 401 for an ended credential, 403 for a demoted owner's key. Any other error goes on as
   * it is.
   */
  const standing = (
    error: unknown,
    {
      principal,
      request,
      route,
      client,
      requestId,
    }: Pick<RequestState, "request" | "client" | "requestId"> & {
      principal: Principal;
      route: string;
    },
  ): unknown =>
    error instanceof ActorGone
      ? lostAdmin({ metrics: options.authMetrics, audit, standing: options.standing }, principal, {
          route: `${request.method} ${route}`,
          ip: client.ip,
          requestId,
        })
      : error;
  const admin = { role: "admin" } as const;
  /** When what a caller makes must have expired: a key's own end; a user's session sets none. */
  const endOf = (principal: Principal): number | null =>
    principal.kind === "key" ? (apiKeys.get(principal.id)?.expiresAt ?? null) : null;
  /** Reads are admin actions too: who looked at keys, blocks or the audit log is itself audited. */
  type Actor = Pick<RequestState, "request" | "client" | "requestId"> & {
    principal: Principal;
    route: string;
  };
  const record = (
    { principal, request, client, requestId, route }: Actor,
    type: AuditEventType,
    detail?: Record<string, string>,
  ) => {
    audit.record({
      type,
      outcome: "success",
      actor: principalRef(principal),
      ip: client.ip,
      route: `${request.method} ${route}`,
      requestId,
      detail,
    });
  };
  /**
   * A key action's origin, for the audit rows ApiKeyService writes: the matched pattern, not the
   * path, which names the key (another principal's id, which an admin's export withholds). The
   * acting credential is asked again in the writing transaction (ActorGone).
   */
  const originOf = ({
    request,
    route,
    client,
    requestId,
    principal,
  }: Pick<RequestState, "request" | "client" | "requestId"> & {
    route: string;
    principal: Principal;
  }) => ({
    ip: client.ip,
    route: `${request.method} ${route}`,
    requestId,
    actorStands: () => options.standing.stillAdmin(principal),
  });
  const tags = ["admin"];

  return new Elysia({ name: "palisade.module.admin", prefix: "/api/admin" })
    .use(options.auth)
    .post(
      "/api-keys",
      ({ body, principal, set, request, client, requestId, route }) => {
        // The new key acts for the caller's owner and may hold nothing that owner's role may not;
        // made by a key, it lives no longer than that key (a short-lived key cannot mint one that
        // never expires).
        refuseText("body/name", keyNameProblem(body.name));
        const asked = body.expiresInDays ? options.now() + body.expiresInDays * DAY_MS : null;
        const spec = {
          name: body.name,
          scopes: body.scopes,
          userId: principal.kind === "user" ? principal.id : principal.userId,
          expiresAt: earliest(asked, endOf(principal)),
          environment: body.environment,
        };
        let created: ReturnType<typeof apiKeys.create>;
        try {
          created = apiKeys.create(
            spec,
            principalRef(principal),
            undefined,
            originOf({ request, client, requestId, route, principal }),
          );
        } catch (error) {
          throw error instanceof KeyRefused
            ? refusalProblem(error.refusal)
            : standing(error, { principal, request, client, requestId, route });
        }
        set.status = 201;
        return { key: created.key, apiKey: view(created.record) };
      },
      {
        auth: admin,
        body: NewKeyBody,
        response: { 201: CreatedKey, ...problemResponses(422) },
        detail: { tags, summary: "Create an API key; the key is in this response only" },
      },
    )
    .get(
      "/api-keys",
      ({ principal, request, client, requestId, route, query }) => {
        // A key list's cursor names the row's place in the file (api-keys listChecked).
        const page = pageOf(query, ROWID);
        record({ principal, request, client, requestId, route }, "admin.keys.listed");
        const { keys, nextCursor } = apiKeys.listChecked(page);
        return { keys: keys.map(({ record, seals }) => view(record, seals)), nextCursor };
      },
      {
        auth: admin,
        query: PageQuery,
        response: { 200: ApiKeyList, ...problemResponses(422) },
        detail: {
          tags,
          summary:
            "List API keys with their owners (never their secrets), newest first (cursor pagination)",
        },
      },
    )
    .delete(
      "/api-keys/:id",
      ({ params, principal, set, request, client, requestId, route }) => {
        const origin = originOf({ request, client, requestId, route, principal });
        let revoked: boolean;
        try {
          revoked = apiKeys.revoke(params.id, principalRef(principal), undefined, origin);
        } catch (error) {
          throw standing(error, { principal, request, client, requestId, route });
        }
        if (!revoked) throw new AppError("NOT_FOUND", "No active key has that id.");
        set.status = 204;
        return undefined;
      },
      {
        auth: admin,
        params: IdParams,
        response: { 204: t.Void({ description: "Revoked" }), ...problemResponses(404, 422) },
        detail: { tags, summary: "Revoke an API key (everywhere within a second)" },
      },
    )
    .post(
      "/api-keys/:id/rotate",
      ({ params, body, principal, set, request, client, requestId, route }) => {
        const graceMs =
          body?.graceMinutes === undefined ? DEFAULT_ROTATION_GRACE_MS : body.graceMinutes * 60_000;
        if (apiKeys.get(params.id)?.origin === "bootstrap") {
          throw new AppError(
            "CONFLICT",
            "Bootstrap keys follow API_KEYS: change the variable and restart to replace one.",
          );
        }
        const actingUserId = principal.kind === "user" ? principal.id : principal.userId;
        // A successor made by a key lives no longer than that key, as a key it mints does.
        let rotated: ReturnType<typeof apiKeys.rotate>;
        try {
          rotated = apiKeys.rotate(
            params.id,
            graceMs,
            principalRef(principal),
            actingUserId,
            endOf(principal),
            originOf({ request, client, requestId, route, principal }),
          );
        } catch (error) {
          throw standing(error, { principal, request, client, requestId, route });
        }
        if (!rotated)
          throw new AppError("NOT_FOUND", "No active key that has not been rotated has that id.");
        set.status = 201;
        return { key: rotated.key, apiKey: view(rotated.record) };
      },
      {
        auth: admin,
        params: IdParams,
        body: t.Optional(RotateBody),
        response: { 201: CreatedKey, ...problemResponses(404, 409, 422) },
        detail: {
          tags,
          summary: "Replace a key; the old one keeps working for the grace period, then dies",
        },
      },
    )
    .get(
      "/audit",
      ({ query, principal, request, client, requestId, route }) => {
        // Addresses are recorded in one spelling (IPv6 compressed and lower case, a mapped IPv4
        // as IPv4): the filter is read the same way, so any spelling finds its events, and text
        // that is no address is refused rather than answered with nothing (probe 32d F1). A
        // block's and its lift's rows name the subject blocked, an IPv6 address's /64 (probe 84j
        // F1) or its /48: found too.
        const address =
          query.ip === undefined
            ? undefined
            : addressOf(query.ip, "query/ip", "The request query is invalid.");
        const ips =
          address === undefined
            ? undefined
            : [
                ...new Set([formatAddress(address), clientKeyOf(address), siteKeyOf(address)]),
              ].filter((ip) => ip !== null);
        // A type no release writes finds nothing: a misspelt one answered an empty page, read as
        // "no such events" (stop 78's note).
        if (query.type !== undefined && !isRecordedAuditType(query.type)) {
          throw new AppError("VALIDATION_FAILED", "The request query is invalid.", [
            {
              field: "query/type",
              message: "Expected an audit event type (the README's Audit log lists them)",
            },
          ]);
        }
        const page = queryAuditEvents(
          options.sqlite,
          {
            type: query.type,
            actor: query.actor,
            ips,
            since: query.since ? Date.parse(query.since) : undefined,
            until: query.until ? Date.parse(query.until) : undefined,
            cursor: query.cursor,
            limit: query.limit ?? 100,
          },
          (row) => audit.vouches(row),
        );
        record({ principal, request, client, requestId, route }, "admin.audit.queried", {
          filters: Object.keys(query).sort().join(","),
        });
        return page;
      },
      {
        auth: admin,
        query: AuditQuery,
        response: { 200: AuditPage, ...problemResponses(422) },
        detail: { tags, summary: "Query the audit log, newest first (max 500 a page)" },
      },
    )
    .get(
      "/security/summary",
      async ({ query, principal, request, client, requestId, route }) => {
        const now = options.now();
        const since = parseSince(query.since, now);
        if (!since.ok) {
          throw new AppError("VALIDATION_FAILED", "The window is not valid.", [
            { field: "query/since", message: since.message },
          ]);
        }
        const summary = await summarizeSecurity(
          options.sqlite,
          { since: since.at, until: now, top: query.limit ?? DEFAULT_TOP },
          (row) => audit.vouches(row),
        );
        record({ principal, request, client, requestId, route }, "admin.security.summarized", {
          since: new Date(since.at).toISOString(),
        });
        return presentSummary(summary);
      },
      {
        auth: admin,
        query: SecuritySummaryQuery,
        response: { 200: SecuritySummaryView, ...problemResponses(422) },
        detail: {
          tags,
          summary:
            "Top addresses and principals by failed logins, rate-limit refusals and signature failures, from the audit log",
        },
      },
    )
    .get(
      "/blocks",
      ({ principal, request, client, requestId, route, query }) => {
        // Block ids are integers: a cursor naming another kind of id is not one this route gave.
        const { cursor, limit } = pageOf(query, ROWID);
        record({ principal, request, client, requestId, route }, "admin.blocks.listed");
        return ipBlocks.activePage({
          cursor: cursor && { createdAt: cursor.createdAt, id: cursor.id },
          limit,
        });
      },
      {
        auth: admin,
        query: PageQuery,
        response: { 200: BlockList, ...problemResponses(422) },
        detail: { tags, summary: "IP blocks in force, newest first (cursor pagination)" },
      },
    )
    .post(
      "/blocks",
      ({ body, principal, set, requestId, client, request, route }) => {
        refuseText("body/reason", blockReasonProblem(body.reason));
        const subject = blockSubjectOf(body.address);
        if (subject === null) {
          throw new AppError("VALIDATION_FAILED", "Not an IP address.", [
            {
              field: "body/address",
              message:
                "Expected a canonical dotted-decimal IPv4 or an IPv6 address, or an IPv6 /48",
            },
          ]);
        }
        // Blocking the address this request comes from (or its /48) shuts out every admin behind
        // it, the one lifting it included (only the CLI on the server could): the API refuses; the
        // CLI may.
        if (subject === client.key || subject === client.siteKey) {
          throw new AppError(
            "CONFLICT",
            "That block would cover the address this request comes from, and lock you out; add it with `bun run cli blocks:add` on the server if that is meant.",
          );
        }
        // A trusted proxy this request came through (TRUST_PROXY): blocked, it refuses every
        // request it passes on without a usable X-Forwarded-For, its health checks and the clients
        // of a misconfigured hop among them (probes 32d F2, 33b F2: any hop, not the nearest alone).
        if (client.proxyKeys?.some((proxy) => proxy === subject || siteOfKey(proxy) === subject)) {
          throw new AppError(
            "CONFLICT",
            "That block would cover the proxy this request came through (TRUST_PROXY): every request reaching the service without a usable X-Forwarded-For would be refused; add it with `bun run cli blocks:add` on the server if that is meant.",
          );
        }
        const creator = principalRef(principal);
        let block: ReturnType<typeof ipBlocks.block>;
        try {
          block = ipBlocks.block({
            address: subject,
            reason: body.reason,
            ttlMs: body.ttlMinutes * 60_000,
            source: "admin",
            createdBy: creator,
            creatorStands: () => options.standing.stillAdmin(principal),
            requestId,
            origin: { route: `${request.method} ${route}` },
          });
        } catch (error) {
          throw standing(error, { principal, request, client, requestId, route });
        }
        set.status = 201;
        return block;
      },
      {
        auth: admin,
        body: NewBlockBody,
        response: { 201: BlockView, ...problemResponses(409, 422) },
        detail: {
          tags,
          summary: "Block an address (an IPv6 address blocks its /64; an IPv6 /48, all of it)",
        },
      },
    )
    .delete(
      "/blocks/:id",
      async ({ params, principal, set, requestId, client, request, route }) => {
        const block = ipBlocks.activeBlock(params.id);
        if (!block) throw new AppError("NOT_FOUND", "No block in force has that id.");
        try {
          await ipBlocks.lift(
            block.address,
            principalRef(principal),
            requestId,
            () => options.standing.stillAdmin(principal),
            { route: `${request.method} ${route}` },
          );
        } catch (error) {
          throw standing(error, { principal, request, client, requestId, route });
        }
        set.status = 204;
        return undefined;
      },
      {
        auth: admin,
        params: IdParams,
        response: { 204: t.Void({ description: "Lifted" }), ...problemResponses(404, 422) },
        detail: { tags, summary: "Lift a block" },
      },
    );
}

/** The answer to a key creation the owner's role refused. */
function refusalProblem(refused: KeyRefusal): AppError {
  switch (refused.code) {
    case "TEST_KEY_IN_PRODUCTION":
      return new AppError("VALIDATION_FAILED", "pal_test_ keys are refused in production.", [
        { field: "body/environment", message: "Must be live in production" },
      ]);
    case "SCOPES_EXCEED_ROLE":
      return new AppError("VALIDATION_FAILED", "The key's owner may not hold these scopes.", [
        {
          field: "body/scopes",
          message: `A ${refused.role}'s key may not hold ${refused.scopes.join(", ")}`,
        },
      ]);
    case "NO_OWNER":
      return new AppError("UNAUTHENTICATED", "The account no longer exists.");
  }
}
