/**
 * Error reporting against a local server that receives Sentry envelopes as sentry.io would: a 500
 * arrives with the request id, route and principal, and without any secret that was in the
 * request; an upstream failure reported without throwing arrives too; no DSN sends nothing; two
 * apps in one process never share a client.
 */
import { Database } from "bun:sqlite";
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Elysia, t } from "elysia";
import { AppError } from "../../src/errors";
import { createLogger } from "../../src/logging/logger";
import type { Feature } from "../../src/modules/feature";
import { Registry } from "../../src/plugins/metrics/prom";
import { createErrorReporter } from "../../src/plugins/sentry";
import { RUN_QUIET_MS } from "../../src/plugins/sentry/delivery";
import { createScrubber } from "../../src/plugins/sentry/scrub";
import {
  createReportThrottle,
  fingerprintOf,
  LOST_RETRY_MS,
  REPORT_INTERVAL_MS,
} from "../../src/plugins/sentry/throttle";
import { buildTestApp, LogCapture, send, type TestApp, tempDir } from "../support/app";
import { bearer, createKey, signUp } from "../support/auth";
import { ManualClock } from "../support/clock";
import { BASIC_CREDENTIAL, CREDENTIAL_QUERY, CREDENTIAL_VALUES } from "../support/credentials";
import { buildPaymentsApp, createIntent } from "../support/payments";
import { startService } from "../support/process";
import { startRedirectingUpstream } from "../support/redirecting-upstream";
import { type SentryServer, startSentryServer } from "../support/sentry-server";
import { UNCHECKED_ROUTE, uncheckedStoredValue } from "../support/unchecked-stored-value";
import { waitFor } from "../support/wait";

const CONFIGURED_SECRET = "whsec_configured-stripe-secret-0123456789";
const PASSWORD = "my-secret-password-Vx93!qq";
const CHAT_TEXT = "please keep this private: my card ends 4242";

let sentry: SentryServer;
let current: TestApp | null = null;
/** The app under test, for the routes that report without throwing. */
let reportTarget: TestApp | null = null;

beforeAll(() => {
  sentry = startSentryServer();
});
afterAll(() => sentry.stop());
afterEach(() => {
  current?.close();
  current = null;
  sentry.envelopes.length = 0;
});

const explosions: Feature = {
  name: "explosions",
  routeClasses: [
    { routes: ["POST /test/explode"] },
    { routes: ["POST /api/auth/test-explode"], policy: "register" },
    { routes: ["POST /api/chat/test-upstream"], bodyLimit: "chat" },
  ],
  routes: ({ auth }) =>
    new Elysia()
      .use(auth)
      .post(
        "/test/explode",
        () => {
          // A careless message that carries a configured secret.
          throw new Error(`stripe call failed with key ${CONFIGURED_SECRET}`);
        },
        { auth: "principal" },
      )
      .post(
        "/api/auth/test-explode",
        ({ body }) => {
          throw new Error(`sign-in store failed for ${body.email}`);
        },
        { public: true, body: t.Object({ email: t.String(), password: t.String() }) },
      )
      .post(
        "/api/chat/test-upstream",
        ({ body, requestId, principal, request }) => {
          // An upstream failure answered with a fallback, reported without throwing.
          reportTarget!.services.errors.report(new Error("openai answered 502 Bad Gateway"), {
            requestId,
            route: "POST /api/chat/test-upstream",
            principal: `${principal.kind}:${principal.id}`,
            upstream: "openai",
            request,
            extra: { message: body.message, model: "gpt-4o-mini", attempt: 2 },
          });
          return { reply: "The assistant is unavailable; try again shortly." };
        },
        { auth: "principal", body: t.Object({ message: t.String() }) },
      ),
};

function build(env: Record<string, string | undefined> = {}, clock?: ManualClock): TestApp {
  current = buildTestApp({
    clock,
    extraFeatures: [explosions],
    env: { SENTRY_DSN: sentry.dsn(), STRIPE_WEBHOOK_SECRET: CONFIGURED_SECRET, ...env },
  });
  reportTarget = current;
  return current;
}

test("a 500 arrives with request id, route and principal, and without any secret from the request", async () => {
  const clock = new ManualClock();
  const target = build({ APP_RELEASE: "palisade@test-1" }, clock);
  const user = await signUp(target);
  const key = createKey(target, ["chat"], user.userId);
  const encodedSecret = encodeURIComponent(CONFIGURED_SECRET).replace(/_/g, "%5F");
  const response = await send(
    target,
    `/test/explode?api_key=${key.key}&page=2&password=QUERYPASS999&t=Bearer%20QUERYBEARER777&s=${encodedSecret}`,
    {
      body: {},
      headers: {
        ...bearer(user.accessToken),
        cookie: `palisade_session=${user.accessToken}; palisade_csrf=csrf-cookie-value-123`,
        "x-request-id": "req-sentry-500",
        "user-agent": "sentry-test",
        // Credentials in headers nobody told the scrubber about.
        "x-auth": "Basic QkFTSUNTRUNSRVQ1NTU=",
        "x-refresh-token": "RefreshTok3nOpaqueSECRETvalue",
        "x-trace": encodedSecret,
      },
    },
  );
  expect(response.status).toBe(500);
  expect(((await response.json()) as { code: string }).code).toBe("INTERNAL");
  expect(await target.services.errors.flush(5000)).toBe(true);

  await waitFor(() => sentry.events().length === 1, { what: "one event" });
  const envelope = sentry.envelopes[0]!;
  expect(envelope.project).toBe("42");
  const event = sentry.events()[0] as {
    tags: Record<string, string>;
    environment: string;
    release: string;
    user: { id: string };
    exception: { values: { type: string; value: string }[] };
    request: { url: string; method: string; headers: Record<string, string>; query_string: string };
  };
  expect(event.tags.request_id).toBe("req-sentry-500");
  expect(event.tags.route).toBe("POST /test/explode");
  expect(event.tags.principal).toBe(`user:${user.userId}`);
  expect(event.tags.status).toBe("500");
  expect(event.user.id).toBe(`user:${user.userId}`);
  expect(event.environment).toBe("development");
  expect(event.release).toBe("palisade@test-1");
  expect(event.request.method).toBe("POST");
  // The route pattern, never the raw path or the query string; only harmless headers.
  expect(event.request.url).toBe("/test/explode");
  expect(event.request.headers["user-agent"]).toBe("sentry-test");
  expect(Object.keys(event.request.headers).sort()).toEqual(["content-type", "user-agent"]);
  expect(event.request.query_string).toBeUndefined();
  // The error is there, its secret is not.
  expect(event.exception.values[0]!.value).toBe("stripe call failed with key [Filtered]");

  // The same through an API key in its header (a minute later: the same failure is sent once a
  // minute): the key is the principal, and is not sent.
  clock.advance(REPORT_INTERVAL_MS);
  const viaKey = await send(target, "/test/explode", {
    body: {},
    headers: { "x-api-key": key.key, "x-request-id": "req-sentry-key" },
  });
  expect(viaKey.status).toBe(500);
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 2, { what: "the second event" });
  const keyEvent = sentry.events()[1] as typeof event;
  expect(keyEvent.tags.request_id).toBe("req-sentry-key");
  expect(keyEvent.tags.principal).toBe(`key:${key.record.id}`);

  // Nothing secret anywhere in what was sent, in any form.
  const sent = sentry.envelopes.map((e) => e.raw).join("\n");
  for (const secret of [
    user.accessToken,
    key.key,
    CONFIGURED_SECRET,
    "csrf-cookie-value-123",
    target.config.jwt.secretKey,
    "QUERYPASS999",
    "QUERYBEARER777",
    "QkFTSUNTRUNSRVQ1NTU",
    "RefreshTok3nOpaqueSECRETvalue",
    encodedSecret,
    encodedSecret.slice(0, 12),
  ]) {
    expect(sent).not.toContain(secret);
  }
  for (const header of ["authorization", "cookie", "x-api-key"]) {
    for (const sentEvent of [event, keyEvent]) {
      expect(Object.keys(sentEvent.request.headers).map((h) => h.toLowerCase())).not.toContain(
        header,
      );
    }
  }
});

test("the body of an auth route never leaves, even when the error names part of it", async () => {
  const target = build();
  const response = await send(target, "/api/auth/test-explode", {
    body: { email: "someone@example.test", password: PASSWORD },
    headers: { "x-request-id": "req-auth-500" },
  });
  expect(response.status).toBe(500);
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "one event" });
  const event = sentry.events()[0] as { tags: Record<string, string>; request: object };
  expect(event.tags.request_id).toBe("req-auth-500");
  expect(event.tags.route).toBe("POST /api/auth/test-explode");
  expect(event.tags.principal).toBeUndefined();
  expect("data" in event.request).toBe(false);
  expect(sentry.envelopes[0]!.raw).not.toContain(PASSWORD);
});

test("an upstream failure reported without throwing arrives tagged, without the user's chat text", async () => {
  const target = build();
  const user = await signUp(target);
  const response = await send(target, "/api/chat/test-upstream", {
    body: { message: CHAT_TEXT },
    headers: { ...bearer(user.accessToken), "x-request-id": "req-upstream" },
  });
  expect(response.status).toBe(200);
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "one event" });
  const event = sentry.events()[0] as {
    tags: Record<string, string>;
    extra: Record<string, unknown>;
  };
  expect(event.tags).toMatchObject({
    request_id: "req-upstream",
    route: "POST /api/chat/test-upstream",
    principal: `user:${user.userId}`,
    upstream: "openai",
  });
  // What helps debugging stays; what the user wrote does not.
  expect(event.extra).toEqual({ model: "gpt-4o-mini", attempt: 2 });
  const raw = sentry.envelopes[0]!.raw;
  expect(raw).not.toContain(CHAT_TEXT);
  expect(raw).not.toContain(user.accessToken);
});

test("a 4xx is not reported; a 503 from an unusable database is", async () => {
  const target = build();
  expect((await send(target, "/test/explode", { body: {} })).status).toBe(401);
  expect((await send(target, "/nope")).status).toBe(404);
  await target.services.errors.flush(5000);
  expect(sentry.events()).toHaveLength(0);

  // Another connection holds the write lock: registering answers 503 SERVICE_UNAVAILABLE.
  const holder = new Database(target.databasePath);
  holder.run("BEGIN IMMEDIATE");
  try {
    const busy = await send(target, "/api/auth/register", {
      body: { email: "busy@example.test", password: "violet-Harbor-quantum-73!" },
    });
    expect(busy.status).toBe(503);
  } finally {
    holder.run("ROLLBACK");
    holder.close();
  }
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "the 503 event" });
  const event = sentry.events()[0] as {
    tags: Record<string, string>;
    request: { url?: string; method: string };
  };
  expect(event.tags.status).toBe("503");
  expect(event.tags.code).toBe("SERVICE_UNAVAILABLE");
  // Refused by the limiter (its store is locked) before routing: still tagged with its route.
  expect(event.tags.route).toBe("POST /api/auth/register");
  expect(event.request.url).toBe("/api/auth/register");
});

test("a feature not configured (501 NOT_CONFIGURED) is not reported, whoever asks; a 500 after it still is (probe 43c F1)", async () => {
  // No STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET or WHATSAPP_APP_SECRET: the default deployment.
  const target = build({ STRIPE_WEBHOOK_SECRET: undefined });
  const user = await signUp(target);
  const unconfigured = [
    await send(target, "/webhooks/stripe", { body: {} }),
    await send(target, "/webhooks/whatsapp", { body: {} }),
    await send(target, "/api/payments", { headers: bearer(user.accessToken) }),
  ];
  for (const response of unconfigured) {
    expect(response.status).toBe(501);
    expect(((await response.json()) as { code: string }).code).toBe("NOT_CONFIGURED");
  }
  const explode = await send(target, "/test/explode", {
    body: {},
    headers: bearer(user.accessToken),
  });
  expect(explode.status).toBe(500);
  // Reports leave in the order made: had the 501s been reported, they would be here first.
  expect(await target.services.errors.flush(5000)).toBe(true);
  await waitFor(() => sentry.events().length > 0, { what: "the 500 event" });
  expect(sentry.events().map((event) => (event.tags as Record<string, string>).code)).toEqual([
    "INTERNAL",
  ]);
});

test("a redirect from the DSN's host is not followed: the event goes nowhere else", async () => {
  const upstream = startRedirectingUpstream();
  try {
    const host = new URL(upstream.url).host;
    const target = build({ SENTRY_DSN: `http://0123456789abcdef0123456789abcdef@${host}/7` });
    const user = await signUp(target);
    const explode = await send(target, "/test/explode", {
      body: {},
      headers: bearer(user.accessToken),
    });
    expect(explode.status).toBe(500);
    expect(await target.services.errors.flush(5000)).toBe(true);
    // The SDK's own transport re-sent the event (its request, its user) to the host named.
    expect(upstream.elsewhere).toEqual([]);
  } finally {
    upstream.stop();
  }
});

test("reports Sentry refuses, or that cannot reach it, are counted and said once a run: a warning at the first, how many were lost at the next delivered (probe 55a F2)", async () => {
  const clock = new ManualClock();
  const target = build({}, clock);
  const user = await signUp(target);
  const explode = async () =>
    expect(
      (await send(target, "/test/explode", { body: {}, headers: bearer(user.accessToken) })).status,
    ).toBe(500);
  const failedMetric = async (reason: string) => {
    const text = await (await send(target, "/metrics")).text();
    return Number(
      new RegExp(
        `^error_reports_failed_total\\{reason="${reason}",kind="error"\\} (\\d+)$`,
        "m",
      ).exec(text)?.[1],
    );
  };
  expect(await failedMetric("refused")).toBe(0);
  sentry.refuseWith = 403;
  try {
    // Two failures a minute apart (the throttle sends one a minute), both refused.
    await explode();
    await target.services.errors.flush(5000);
    clock.advance(REPORT_INTERVAL_MS);
    await explode();
    await target.services.errors.flush(5000);
    await waitFor(async () => (await failedMetric("refused")) === 2, { what: "two refusals" });
  } finally {
    sentry.refuseWith = null;
  }
  const warned = () =>
    target.logs.entries.filter((entry) => String(entry.msg).startsWith("sentry did not take"));
  expect(warned().map((entry) => [entry.level, entry.reason, entry.status])).toEqual([
    ["warn", "refused", 403],
  ]);
  clock.advance(REPORT_INTERVAL_MS);
  await explode();
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "the event Sentry took" });
  const recovered = target.logs.entries.filter(
    (entry) => entry.msg === "sentry takes error reports again",
  );
  expect(recovered.map((entry) => entry.lost)).toEqual([2]);
});

test("a DSN whose host refuses connections: counted as network, said once", async () => {
  const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
  const port = closed.port;
  closed.stop(true);
  const target = build({
    SENTRY_DSN: `http://0123456789abcdef0123456789abcdef@127.0.0.1:${port}/7`,
  });
  const user = await signUp(target);
  expect(
    (await send(target, "/test/explode", { body: {}, headers: bearer(user.accessToken) })).status,
  ).toBe(500);
  await target.services.errors.flush(5000);
  await waitFor(
    async () =>
      /^error_reports_failed_total\{reason="network",kind="error"\} 1$/m.test(
        await (await send(target, "/metrics")).text(),
      ),
    { what: "the failure counted" },
  );
  expect(
    target.logs.entries.filter((entry) => String(entry.msg).startsWith("sentry did not take")),
  ).toEqual([expect.objectContaining({ level: "warn", reason: "network", status: null })]);
});

/** A reporter of its own, as core.ts makes it, with its metrics and log lines in reach. */
function standaloneReporter(
  options: { sendTimeoutMs?: number; now?: () => number; tracesSampleRate?: number } = {},
) {
  const logs = new LogCapture();
  const registry = new Registry();
  const reporter = createErrorReporter({
    dsn: sentry.dsn(),
    environment: "test",
    release: "test",
    tracesSampleRate: 0,
    secretValues: [],
    logger: createLogger({ level: "info", destination: logs }),
    registry,
    ...options,
  });
  const failed = async (reason: string, kind = "error") =>
    Number(
      new RegExp(
        `^error_reports_failed_total\\{reason="${reason}",kind="${kind}"\\} (\\d+)$`,
        "m",
      ).exec(await registry.metrics())?.[1],
    );
  const warnings = () =>
    logs.entries.filter((entry) => String(entry.msg).startsWith("sentry did not take"));
  return { reporter, failed, warnings, logs };
}

test("after a 429 the SDK drops reports without sending them: each is counted as rate_limited (probe 57a F4)", async () => {
  const { reporter, failed, warnings } = standaloneReporter();
  sentry.refuseWith = 429;
  try {
    reporter.report(new Error("first failure"));
    await reporter.flush(5000);
    const sentBefore = sentry.envelopes.length;
    // Four different failures (the throttle sends each), all inside the SDK's 60 s back-off.
    for (const name of ["second", "third", "fourth", "fifth"]) {
      reporter.report(new Error(`${name} failure`));
    }
    await reporter.flush(5000);
    await waitFor(async () => (await failed("rate_limited")) === 5, {
      what: "the answered 429 and the four dropped in its back-off",
    });
    expect(sentry.envelopes.length).toBe(sentBefore);
    expect(warnings().map((entry) => [entry.reason, entry.status])).toEqual([
      ["rate_limited", 429],
    ]);
  } finally {
    sentry.refuseWith = null;
  }
});

test("a Sentry that takes the connection and never answers: each report counted as timeout when its wait ends, those past the SDK's buffer as backlog (probe 57a F4)", async () => {
  const clock = new ManualClock();
  const { reporter, failed, warnings, logs } = standaloneReporter({
    sendTimeoutMs: 300,
    now: () => clock.now(),
  });
  sentry.hang = true;
  try {
    // More different failures at once than the SDK holds (64).
    for (let i = 0; i < 70; i++) reporter.report(new Error(`failure number ${i}`));
    await waitFor(async () => (await failed("timeout")) + (await failed("backlog")) === 70, {
      what: "every report counted",
      timeoutMs: 10_000,
    });
    expect(await failed("backlog")).toBe(6);
    expect(warnings()).toHaveLength(1);
  } finally {
    sentry.hang = false;
  }
  // Delivered again once Sentry answers, and the run's losses said once it has been quiet a while.
  clock.advance(RUN_QUIET_MS);
  reporter.report(new Error("after the outage"));
  await reporter.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "the event Sentry took" });
  await waitFor(
    () => logs.entries.some((entry) => entry.msg === "sentry takes error reports again"),
    {
      what: "the recovery said",
    },
  );
  expect(
    logs.entries
      .filter((entry) => entry.msg === "sentry takes error reports again")
      .map((entry) => entry.lost),
  ).toEqual([70]);
  // Each failure whose event was lost is sent again, with what it stood for (probe 89a F1): as
  // many as the queue holds at once; the rest are dropped again (backlog) and wait their turn.
  await reporter.flush(5000, { final: true });
  await waitFor(() => sentry.events().length === 1 + 64, { what: "the lost failures sent again" });
  const resent = sentry.events().slice(1);
  expect(resent.every((event) => (event.extra as { repeats?: number }).repeats === 1)).toBe(true);
  expect(await failed("backlog")).toBe(6 + 6);
  await reporter.flush(5000, { final: true });
  await waitFor(() => sentry.events().length === 1 + 70, { what: "the last six sent again" });
});

test("a flood of sampled requests does not crowd an error out: errors leave by a queue of their own, and the lost are counted by kind (probe 89a F1)", async () => {
  const { reporter, failed, warnings } = standaloneReporter({ tracesSampleRate: 1 });
  sentry.delayMs = 500;
  try {
    // (Sampled requests are traced once the SDK has loaded.)
    await reporter.flush(100);
    // More sampled requests at once than any queue holds, then a real failure.
    for (let i = 0; i < 100; i++) {
      reporter.traceRequest({
        method: "GET",
        route: "/health",
        status: 200,
        requestId: `r${i}`,
        startMs: Date.now() - 1,
        endMs: Date.now(),
      });
    }
    reporter.report(new Error("the database is locked"), {
      status: 503,
      code: "SERVICE_UNAVAILABLE",
    });
    await reporter.flush(5000);
    await waitFor(() => sentry.events().length === 1, { what: "the error delivered" });
    expect(await failed("backlog", "transaction")).toBe(100 - 32);
    expect(await failed("backlog", "error")).toBe(0);
    expect(warnings().map((entry) => [entry.reason, entry.kind])).toEqual([
      ["backlog", "transaction"],
    ]);
  } finally {
    sentry.delayMs = 0;
  }
});

test("an answer that fails its schema is reported by route and field paths, never with the answer's values (probe 30b F1)", async () => {
  current = buildTestApp({
    extraFeatures: [uncheckedStoredValue(() => current!.db.$client)],
    env: { SENTRY_DSN: sentry.dsn() },
  });
  const target = current;
  const admin = await signUp(target, { role: "admin" });
  const keyName = "billing-bot-for-acme-4242";
  const { record } = target.services.apiKeys.create(
    { name: keyName, scopes: ["chat"], userId: null },
    "test",
  );
  // A value written into the file that the answer's schema refuses: Infinity for an integer.
  target.db.$client.run("UPDATE api_keys SET last_used_at = 9e999 WHERE id = ?", [record.id]);
  const listed = await send(target, UNCHECKED_ROUTE, { headers: bearer(admin.accessToken) });
  expect(listed.status).toBe(500);
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "the 500 event" });
  const text = JSON.stringify(sentry.events());
  // The answer's values (a key's name, its id) never leave; the principal tag is the admin's.
  expect(text).not.toContain(keyName);
  expect(text).not.toContain(record.id);
  const event = sentry.events()[0] as {
    tags: Record<string, string>;
    exception: { values: { type: string; value: string }[] };
  };
  expect(event.tags.route).toBe(`GET ${UNCHECKED_ROUTE}`);
  expect(event.exception.values[0]!.type).toBe("ResponseSchemaMismatch");
  expect(event.exception.values[0]!.value).toMatch(
    /^A response did not match its schema \(\/test\/unchecked-keys\): response\/keys\/\d+\/lastUsedAt/,
  );
});

test("a payment provider's failure arrives tagged upstream: stripe, with our reason and never Stripe's text (probe 30b F5)", async () => {
  const target = buildPaymentsApp({ env: { SENTRY_DSN: sentry.dsn() } });
  current = target;
  const user = await signUp(target);
  target.stripe.failNext("/v1/payment_intents", {
    status: 500,
    message: `internal failure near ${CONFIGURED_SECRET}`,
    shouldRetry: false,
  });
  const response = await createIntent(target, bearer(user.accessToken), {
    amount: 4200,
    currency: "usd",
  });
  expect(response.status).toBe(503);
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "the 503 event" });
  const event = sentry.events()[0] as {
    tags: Record<string, string>;
    exception: { values: { value: string }[] };
  };
  expect(event.tags.upstream).toBe("stripe");
  expect(event.tags.route).toBe("POST /api/payments/intents");
  expect(event.exception.values.map((value) => value.value)).toContain(
    "stripe unavailable: unrecognised_code",
  );
  expect(JSON.stringify(event)).not.toContain("internal failure near");
});

test("one failure repeated during an outage is sent once a minute, with how many repeats it stood for", async () => {
  const clock = new ManualClock();
  const target = build({}, clock);
  const holder = new Database(target.databasePath);
  holder.run("BEGIN IMMEDIATE");
  const register = (i: number) =>
    send(target, "/api/auth/register", {
      body: { email: `busy${i}@example.test`, password: "violet-Harbor-quantum-73!" },
      peer: `10.40.0.${i}`,
    });
  try {
    for (let i = 0; i < 5; i++) expect((await register(i)).status).toBe(503);
  } finally {
    holder.run("ROLLBACK");
    holder.close();
  }
  // Another failure in the same minute is its own: sent.
  const user = await signUp(target, { peer: "10.41.0.2" });
  expect(
    (await send(target, "/test/explode", { body: {}, headers: bearer(user.accessToken) })).status,
  ).toBe(500);
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 2, { what: "the 503 and the 500" });
  await Bun.sleep(100);
  const tagsOf = () => sentry.events().map((e) => (e as { tags: Record<string, string> }).tags);
  expect(tagsOf().map((tags) => `${tags.status} ${tags.route}`)).toEqual([
    "503 POST /api/auth/register",
    "500 POST /test/explode",
  ]);

  // A minute on, the outage's next 503 is sent, saying four were not.
  clock.advance(REPORT_INTERVAL_MS);
  const again = new Database(target.databasePath);
  again.run("BEGIN IMMEDIATE");
  try {
    expect((await register(9)).status).toBe(503);
  } finally {
    again.run("ROLLBACK");
    again.close();
  }
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 3, { what: "the next 503" });
  const last = sentry.events()[2] as { tags: Record<string, string>; extra: { repeats: number } };
  expect(last.tags.code).toBe("SERVICE_UNAVAILABLE");
  expect(last.extra.repeats).toBe(4);
});

test("the throttle tracks a bounded number of failures: past the bound a new one is still sent; a clock set back starts a new interval", () => {
  const throttle = createReportThrottle(60_000, 2);
  const error = new Error("x");
  expect(throttle.admit("a", 0, error, {})).toEqual({ repeats: null });
  expect(throttle.admit("a", 1, error, {})).toBeNull();
  expect(throttle.admit("b", 2, error, {})).toEqual({ repeats: null });
  // Full, and nothing expired: c is sent (not tracked), and so is its repeat.
  expect(throttle.admit("c", 3, error, {})).toEqual({ repeats: null });
  expect(throttle.admit("c", 4, error, {})).toEqual({ repeats: null });
  // a's next occurrence after its interval carries its one repeat.
  expect(throttle.admit("a", 60_001, error, {})?.repeats).toMatchObject({
    repeats: 1,
    firstAt: 1,
    lastAt: 1,
  });
  // The clock set back an hour (an NTP step): a new interval, not an hour of silence.
  expect(throttle.admit("a", 60_001 - 3_600_000, error, {})).toEqual({ repeats: null });
});

test("repeats with no later occurrence are due when their interval ends, as their last occurrence", () => {
  const throttle = createReportThrottle(60_000, 10);
  const last = new Error("last");
  throttle.admit("a", 0, new Error("first"), { route: "r1" });
  throttle.admit("a", 10, new Error("middle"), { route: "r2" });
  throttle.admit("a", 20, last, { route: "r3" });
  expect(throttle.nextDrainAt()).toBe(60_000);
  expect(throttle.drain(59_999)).toEqual([]);
  expect(throttle.drain(60_000)).toEqual([
    { error: last, context: { route: "r3" }, repeats: 2, firstAt: 10, lastAt: 20 },
  ]);
  expect(throttle.nextDrainAt()).toBeNull();
  // That event was the failure's event for the next interval.
  expect(throttle.admit("a", 60_010, last, {})).toBeNull();
});

test("one 503 behind a lock and another behind a missing table are two failures", () => {
  // As bun:sqlite throws them: one place, another message.
  const sqliteError = (message: string) => {
    const error = new Error(message);
    error.stack = `SQLiteError: ${message}\n    at run (bun:sqlite:194:1)`;
    return error;
  };
  const limiterDown = (cause: Error) =>
    new AppError("SERVICE_UNAVAILABLE", "The rate limiter is unavailable.").causedBy(cause);
  const context = { status: 503, code: "SERVICE_UNAVAILABLE", route: "POST /api/auth/login" };
  const locked = fingerprintOf(limiterDown(sqliteError("database is locked")), context);
  expect(fingerprintOf(limiterDown(sqliteError("database is locked")), context)).toBe(locked);
  expect(
    fingerprintOf(limiterDown(sqliteError("no such table: rate_limit_counters")), context),
  ).not.toBe(locked);
});

test("one message thrown from two places is two failures; the same throw again is one", () => {
  const thrownAt = (frame: string) => () => {
    const error = new TypeError("Cannot read properties of undefined (reading 'id')");
    error.stack = `TypeError: ${error.message}\n    at ${frame}\n    at handle (src/app.ts:10:1)`;
    return error;
  };
  const fromHere = thrownAt("listKeys (src/modules/admin/index.ts:40:12)");
  const fromThere = thrownAt("exportOf (src/modules/privacy/service.ts:88:7)");
  const context = { status: 500, code: "INTERNAL", route: "GET /x" };
  expect(fingerprintOf(fromHere(), context)).toBe(fingerprintOf(fromHere(), context));
  expect(fingerprintOf(fromHere(), context)).not.toBe(fingerprintOf(fromThere(), context));
  expect(fingerprintOf(fromHere(), context)).not.toBe(
    fingerprintOf(fromHere(), { ...context, route: "GET /y" }),
  );
});

test("at shutdown the repeats counted and not yet sent leave as one event saying how many and when", async () => {
  const clock = new ManualClock();
  const target = build({}, clock);
  const holder = new Database(target.databasePath);
  holder.run("BEGIN IMMEDIATE");
  try {
    for (let i = 0; i < 3; i++) {
      const response = await send(target, "/api/auth/register", {
        body: { email: `down${i}@example.test`, password: "violet-Harbor-quantum-73!" },
        peer: `10.42.0.${i}`,
      });
      expect(response.status).toBe(503);
      clock.advance(1_000);
    }
  } finally {
    holder.run("ROLLBACK");
    holder.close();
  }
  await target.services.errors.flush(5000);
  await waitFor(() => sentry.events().length === 1, { what: "the first 503" });
  await target.services.flush();
  await waitFor(() => sentry.events().length === 2, { what: "the repeats at shutdown" });
  const last = sentry.events()[1] as {
    tags: Record<string, string>;
    extra: { repeats: number; repeatsFrom: string; repeatsTo: string };
  };
  expect(last.tags.code).toBe("SERVICE_UNAVAILABLE");
  expect(last.extra.repeats).toBe(2);
  expect(Date.parse(last.extra.repeatsTo) - Date.parse(last.extra.repeatsFrom)).toBe(1_000);
});

test("no DSN: the reporter is off and nothing is sent", async () => {
  current = buildTestApp({ extraFeatures: [explosions] });
  reportTarget = current;
  expect(current.services.errors.enabled).toBe(false);
  const user = await signUp(current);
  const response = await send(current, "/test/explode", {
    body: {},
    headers: bearer(user.accessToken),
  });
  expect(response.status).toBe(500);
  expect(await current.services.errors.flush(1000)).toBe(true);
  await Bun.sleep(50);
  expect(sentry.envelopes).toHaveLength(0);
});

test("each app has its own client: the SDK's global stays uninitialised, two apps report apart", async () => {
  const other = startSentryServer();
  const first = build();
  const second = buildTestApp({
    extraFeatures: [explosions],
    env: { SENTRY_DSN: other.dsn("7") },
  });
  try {
    const user = await signUp(second);
    reportTarget = second;
    expect(
      (await send(second, "/test/explode", { body: {}, headers: bearer(user.accessToken) })).status,
    ).toBe(500);
    await second.services.errors.flush(5000);
    await first.services.errors.flush(5000);
    await waitFor(() => other.events().length === 1, { what: "the second app's event" });
    expect(other.envelopes[0]!.project).toBe("7");
    expect(sentry.events()).toHaveLength(0);
    const Sentry = await import("@sentry/bun");
    expect(Sentry.getClient()).toBeUndefined();
    expect(Sentry.isInitialized()).toBe(false);
  } finally {
    second.close();
    other.stop();
  }
});

test("beforeSend strips credentials, private bodies and configured secrets from every part of an event", () => {
  const secret = "configured-secret-value-0123456789";
  const scrub = createScrubber([secret]);
  const apiKey = "pal_live_abcdefghijklmnop0123456789";
  const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
  const event = {
    message: `failed with ${secret}`,
    exception: { values: [{ type: "Error", value: `key ${apiKey} rejected` }] },
    tags: { note: `Bearer ${jwt}` },
    extra: {
      password: PASSWORD,
      prompt: CHAT_TEXT,
      nested: { apiKey, ok: `uses ${secret}`, pwd: "pwd-value-123", private_key: "pk-value-456" },
    },
    contexts: {
      runtime: { name: "bun", version: "1.4.5" },
      upstream: { token: "t0ken-value-xyz", status: 502 },
    },
    breadcrumbs: [{ message: `GET /x?api_key=${apiKey}`, data: { authorization: jwt, url: "/x" } }],
    request: {
      url: `http://localhost/api/auth/login?token=${jwt}`,
      query_string: `api_key=${apiKey}&page=1`,
      cookies: { palisade_session: jwt },
      headers: {
        Authorization: `Bearer ${jwt}`,
        Cookie: `palisade_session=${jwt}`,
        "X-Api-Key": apiKey,
        "X-CSRF-Token": "csrf-token-value",
        "Stripe-Signature": "t=1,v1=abc",
        Accept: "application/json",
      },
      data: { email: "a@example.test", password: PASSWORD },
    },
  };
  const scrubbed = scrub(event);
  const text = JSON.stringify(scrubbed);
  for (const value of [
    secret,
    apiKey,
    jwt,
    PASSWORD,
    CHAT_TEXT,
    "t0ken-value-xyz",
    "csrf-token-value",
    "pwd-value-123",
    "pk-value-456",
  ]) {
    expect(text).not.toContain(value);
  }
  expect(scrubbed.message).toBe("failed with [Filtered]");
  expect(scrubbed.exception.values[0]!.value).toBe("key [Filtered] rejected");
  expect(scrubbed.request.headers as unknown).toEqual({ Accept: "application/json" });
  expect("data" in scrubbed.request).toBe(false);
  expect("cookies" in scrubbed.request).toBe(false);
  expect("query_string" in scrubbed.request).toBe(false);
  expect(scrubbed.request.url).toBe("http://localhost/api/auth/login");
  expect(scrubbed.extra as unknown).toEqual({ nested: { ok: "uses [Filtered]" } });
  expect(scrubbed.contexts as unknown).toEqual({
    runtime: { name: "bun", version: "1.4.5" },
    upstream: { status: 502 },
  });
  expect(scrubbed.breadcrumbs[0] as unknown).toEqual({
    message: "GET /x?api_key=[Filtered]",
    data: { url: "/x" },
  });
  // The input is not modified (the SDK may still hold it).
  expect(event.request.headers["X-Api-Key"]).toBe(apiKey);

  // Outside the private routes a body is kept, less its credential fields.
  const other = scrub({
    request: {
      url: "http://localhost/api/payments/intents",
      data: { amount: 500, currency: "usd", password: PASSWORD },
    },
  });
  expect(other.request.data as unknown).toEqual({ amount: 500, currency: "usd" });
  for (const path of ["/api/chat", "/api/chat/conversations/1", "/api/me/export"]) {
    const chat = scrub({
      request: { url: `http://localhost${path}`, data: { message: CHAT_TEXT } },
    });
    expect("data" in chat.request).toBe(false);
  }
});

test("SENTRY_TRACES_SAMPLE_RATE: 1 traces every request as a transaction by route pattern; 0 (default) none", async () => {
  const transactions = () =>
    sentry.envelopes.flatMap((e) =>
      e.items.filter((i) => i.type === "transaction").map((i) => i.payload),
    );
  const untraced = build();
  await send(untraced, "/health");
  await send(untraced, "/test/explode", { body: {} });
  await untraced.services.errors.flush(5000);
  expect(transactions()).toHaveLength(0);
  untraced.close();

  const traced = build({ SENTRY_TRACES_SAMPLE_RATE: "1" });
  // The SDK loads asynchronously; requests are traced once it is ready.
  await traced.services.errors.flush(5000);
  await send(traced, "/health", { headers: { "x-request-id": "req-traced" } });
  await send(traced, `/nope/${"secret-path"}`);
  await traced.services.errors.flush(5000);
  await waitFor(() => transactions().length === 2, { what: "two transactions" });
  const [health, unmatched] = transactions() as {
    transaction: string;
    tags: Record<string, string>;
    contexts: { trace: { op: string; status: string } };
    start_timestamp: number;
    timestamp: number;
  }[];
  expect(health!.transaction).toBe("GET /health");
  expect(health!.tags.request_id).toBe("req-traced");
  expect(health!.contexts.trace.op).toBe("http.server");
  expect(health!.timestamp).toBeGreaterThanOrEqual(health!.start_timestamp);
  expect(unmatched!.transaction).toBe("GET <unmatched>");
  expect(unmatched!.tags.status).toBe("404");
  expect(sentry.envelopes.map((e) => e.raw).join("")).not.toContain("secret-path");
});

test("a real process reports a 503 and sends it before it exits on SIGTERM", async () => {
  const dir = tempDir();
  try {
    const databasePath = join(dir.path, "sentry.db");
    const service = await startService({
      DATABASE_PATH: databasePath,
      SENTRY_DSN: sentry.dsn("9"),
      LOG_LEVEL: "info",
    });
    let exitCode: number;
    const holder = new Database(databasePath);
    try {
      holder.run("BEGIN IMMEDIATE");
      const response = await fetch(new URL("/api/auth/register", service.url), {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": "req-process-503" },
        body: JSON.stringify({ email: "busy@example.test", password: PASSWORD }),
      });
      expect(response.status).toBe(503);
    } finally {
      holder.run("ROLLBACK");
      holder.close();
      exitCode = await service.stop("SIGTERM");
    }
    expect(exitCode).toBe(0);
    // Sent by the time the process has exited: nothing to wait for. (The SDK loads in the
    // background at start; a report made before it is ready is queued, and only the flush at
    // shutdown gets it out when SIGTERM follows at once.)
    const event = sentry.events()[0] as { tags: Record<string, string> } | undefined;
    expect(event?.tags.request_id).toBe("req-process-503");
    expect(sentry.envelopes[0]!.project).toBe("9");
    expect(sentry.envelopes[0]!.raw).not.toContain(PASSWORD);
  } finally {
    dir.remove();
  }
}, 30_000);

/** A base64 secret, as `openssl rand -base64 32` makes them: `+`, `/` and `=` are URL-encoded. */
const B64_SECRET = "Zm9v+YmFy/YmF6PT0rLy8xMjM0NTY3ODkw+YWJj/ZGVm==";

test("a configured secret in any URL spelling is scrubbed from every string of an event; the query string never leaves", () => {
  const scrub = createScrubber([B64_SECRET]);
  const encoded = encodeURIComponent(B64_SECRET);
  const spellings = [
    B64_SECRET,
    encoded,
    encoded.replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()),
    B64_SECRET.replace(/\+/g, "%2B"),
    B64_SECRET.replace(/\//g, "%2f"),
    B64_SECRET.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
  ];
  for (const spelling of spellings) {
    const event = scrub({
      message: `upstream refused ${spelling}`,
      request: {
        method: "POST",
        url: `http://127.0.0.1:3000/api/items/${spelling}?s=${spelling}#${spelling}`,
        query_string: `s=${spelling}`,
        headers: { "user-agent": `agent ${spelling}`, "x-trace": spelling },
      },
      breadcrumbs: [{ message: `GET /x/${spelling}`, data: { url: `/cb?s=${spelling}` } }],
      extra: { upstream: { body: `{"error":"bad key ${spelling}"}` } },
      tags: { path: `/x/${spelling}` },
    });
    const text = JSON.stringify(event);
    expect(text).not.toContain(spelling);
    for (const fragment of [B64_SECRET.slice(0, 9), encoded.slice(0, 12), B64_SECRET.slice(-9)]) {
      expect(text).not.toContain(fragment);
    }
    expect("query_string" in event.request).toBe(false);
    expect(event.request.url).toBe("http://127.0.0.1:3000/api/items/[Filtered]");
    expect(event.request.headers as unknown).toEqual({ "user-agent": "agent [Filtered]" });
  }
});

test("credentials anywhere in request data never leave: bearer in URL form, credential parameters, Basic and opaque tokens in any header", () => {
  const scrub = createScrubber([]);
  const event = scrub({
    message: "callback failed: GET /cb?code=OAUTHCODE4242&state=ok&access_token=ACCESSTOK4242",
    request: {
      method: "POST",
      url: "http://127.0.0.1:3000/api/auth/login?password=URLPASS4242",
      query_string: `${CREDENTIAL_QUERY}SECRETvalue_abc&secret=QSECRET4242&key=QKEY4242&token=QTOKEN4242`,
      headers: {
        "x-auth": BASIC_CREDENTIAL,
        "X-Refresh-Token": "OpaqueRefresh4242",
        "x-session": "OpaqueSession4242",
        "x-anything": "whatever-value-4242",
        Accept: "application/json",
        "user-agent": "curl Bearer+UABEARER4242",
      },
      cookies: { any: "COOKIE4242" },
      env: { REMOTE_ADDR: "ENV4242" },
    },
    breadcrumbs: [
      { message: "GET /x/Bearer%20CRUMBBEARER4242", data: { url: "/x?key=CRUMBKEY4242" } },
    ],
    extra: { note: "retry with token=EXTRATOKEN4242&sig=EXTRASIG4242" },
  });
  const text = JSON.stringify(event);
  expect(text).not.toMatch(/[A-Z]+4242/);
  for (const value of CREDENTIAL_VALUES) expect(text).not.toContain(value);
  expect(Object.keys(event.request).sort()).toEqual(["headers", "method", "url"]);
  expect(event.request.headers as unknown).toEqual({
    Accept: "application/json",
    "user-agent": "curl [Filtered]",
  });
  // The state parameter and the rest of the message are still useful.
  expect(event.message).toBe(
    "callback failed: GET /cb?code=[Filtered]&state=ok&access_token=[Filtered]",
  );
});

test("what is nested deeper than the limit is replaced by [Truncated], never passed on unscrubbed", () => {
  const scrub = createScrubber(["CONFIGURED-SECRET-VALUE-0123456789"]);
  const nest = () => {
    let inner: Record<string, unknown> = {
      note: "CONFIGURED-SECRET-VALUE-0123456789 pal_live_DEEPKEY",
      password: "DEEPPASS",
      list: [["pal_live_DEEPLISTKEY"]],
    };
    for (let i = 0; i < 30; i++) inner = { cause: inner };
    return inner;
  };
  let deepArray: unknown = ["CONFIGURED-SECRET-VALUE-0123456789"];
  for (let i = 0; i < 30; i++) deepArray = [deepArray];
  const event = scrub({
    extra: { upstream: nest() },
    contexts: { upstream: nest(), trace: nest() },
    tags: { deep: nest() },
    breadcrumbs: [{ data: nest(), message: "m" }],
    request: { url: "/api/payments/intents", data: nest() },
    exception: { values: [{ value: "x", stacktrace: { frames: [{ vars: nest() }] } }] },
    other: deepArray,
  });
  const text = JSON.stringify(event);
  expect(text).not.toContain("CONFIGURED-SECRET-VALUE");
  expect(text).not.toContain("DEEPKEY");
  expect(text).not.toContain("DEEPLISTKEY");
  expect(text).not.toContain("DEEPPASS");
  expect(text).toContain('"[Truncated]"');
  // Shallow data is untouched by the limit.
  let depth = 0;
  let node = (event.extra as { upstream: unknown }).upstream;
  while (node && typeof node === "object" && "cause" in node) {
    node = (node as { cause: unknown }).cause;
    depth++;
  }
  expect(node).toBe("[Truncated]");
  expect(depth).toBeGreaterThanOrEqual(15);
});

test("a failure whose events keep being lost is sent again after 10 s, then 20, 40, and once a minute, not every 10 s while Sentry is down; a delivery starts over (probe 89d F6)", () => {
  const throttle = createReportThrottle();
  const error = new Error("the database is locked");
  const context = { status: 503, code: "SERVICE_UNAVAILABLE" };
  let now = 1_000_000;
  expect(throttle.admit("f", now, error, context)).toEqual({ repeats: null });
  const waits: number[] = [];
  for (let loss = 0; loss < 5; loss++) {
    throttle.lost("f", now, { error, context, repeats: 1, firstAt: now, lastAt: now });
    const at = throttle.nextDrainAt()!;
    waits.push(at - now);
    now = at;
    expect(throttle.drain(now)).toHaveLength(1);
  }
  expect(waits).toEqual([
    LOST_RETRY_MS,
    2 * LOST_RETRY_MS,
    4 * LOST_RETRY_MS,
    REPORT_INTERVAL_MS,
    REPORT_INTERVAL_MS,
  ]);
  throttle.delivered("f");
  throttle.lost("f", now, { error, context, repeats: 1, firstAt: now, lastAt: now });
  expect(throttle.nextDrainAt()! - now).toBe(LOST_RETRY_MS);
});
