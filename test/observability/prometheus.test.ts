/**
 * Proof against the real thing: the service (a real process) scraped every second by Debian's
 * real Prometheus, configured from the shipped grafana/prometheus.yml (bearer token from a
 * credentials file), after traffic that produces every metric this branch can produce. Then every
 * PromQL expression of every dashboard panel and every alert rule goes through Prometheus's HTTP
 * API (`/api/v1/query`):
 *
 * - every expression must evaluate without an error;
 * - a panel's expression must return series, and so must each of its metric selectors;
 * - an alert's expression may rightly return nothing (its threshold is not crossed by a test's
 *   traffic), so for alerts each metric selector of the expression must return series: the rule
 *   reads metrics that exist, with labels that exist, which is what a typo or a renamed label
 *   would break.
 *
 * Adding traffic for a feature is one entry in TRAFFIC. Every feature has its entry: auth, rate
 * limits and blocks, CSRF, a locked database, both webhooks (forged and good deliveries), chat
 * through the OpenAI provider up to its daily budget, and a payment with its dispute. The upstreams
 * are local servers speaking the real wire protocols (test/support/openai-server.ts,
 * stripe-server.ts, graph-server.ts), started here and handed to the service through its
 * environment, so no expression is exempt: a metric without traffic fails the test.
 *
 * Where an alert goes: Prometheus hands firing alerts to a real Alertmanager (Debian's
 * prometheus-alertmanager) configured by `bun run cli alerts:config` from ALERT_EMAIL and
 * ALERT_SMTP_*, which mails them through a local SMTP relay (test/support/smtp-server.ts) to every
 * ALERT_EMAIL address. The rule that fires is a proof-only one (`up == 1`, no `for`): the shipped
 * rules' thresholds are not crossed in seconds, and the path after the rule is the same for all.
 *
 * Also `promtool check metrics` on the service's /metrics output. Skipped without prometheus,
 * promtool or prometheus-alertmanager (a failure in CI: test/support/prometheus.ts).
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ALERT_RULES } from "../../grafana/src/alerts";
import { dashboardQueries } from "../../grafana/src/dashboards";
import { generateApiKey, hashApiKey, keyPrefix } from "../../src/plugins/auth/api-key-format";
import { CONTRACT_METRIC_NAMES } from "../../src/plugins/metrics/names";
import { tempDir } from "../support/app";
import { STRONG_PASSWORD } from "../support/auth";
import { cliInProcess } from "../support/cli";
import { type GraphServer, startGraphServer } from "../support/graph-server";
import { type OpenAiServer, startOpenAiServer } from "../support/openai-server";
import { STRIPE_TEST_KEY, signStripe, stripeEvent, WEBHOOK_SECRET } from "../support/payments";
import { type ServiceProcess, startService } from "../support/process";
import {
  type AlertmanagerServer,
  alertmanagerAvailable,
  check,
  localPrometheusConfig,
  type PrometheusServer,
  prometheusAvailable,
  promtoolAvailable,
  startAlertmanager,
  startPrometheus,
} from "../support/prometheus";
import { metricSelectors, substituteGrafanaVariables } from "../support/promql";
import { type SmtpServer, startSmtpServer } from "../support/smtp-server";
import { type FakeStripe, startFakeStripe } from "../support/stripe-server";
import {
  sign as signWhatsApp,
  WA_APP_SECRET,
  WA_VERIFY_TOKEN,
  notification as whatsappNotification,
} from "../support/whatsapp";

const METRICS_TOKEN = "proof-Metrics-Token-7f3a9c2e5b8d1046";

interface TrafficContext {
  /** A request to the service as if from `address` (the service trusts loopback proxies). */
  request(path: string, init?: RequestInit & { from?: string }): Promise<Response>;
  databasePath: string;
  /** The local upstreams the service is pointed at (OPENAI_BASE_URL, STRIPE_API_URL, WHATSAPP_API_URL). */
  openai: OpenAiServer;
  stripe: FakeStripe;
  graph: GraphServer;
}

interface Traffic {
  name: string;
  drive(context: TrafficContext): Promise<void>;
}

const json = (body: unknown) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

/** Registers `email` from `from` and signs in: the Authorization header of its access token. */
async function signedIn(
  request: TrafficContext["request"],
  email: string,
  from: string,
): Promise<Record<string, string>> {
  const register = await request("/api/auth/register", {
    ...json({ email, password: STRONG_PASSWORD }),
    from,
  });
  expect(register.status).toBe(201);
  const login = await request("/api/auth/login", {
    ...json({ email, password: STRONG_PASSWORD }),
    from,
  });
  expect(login.status).toBe(200);
  const { accessToken } = (await login.json()) as { accessToken: string };
  return { authorization: `Bearer ${accessToken}` };
}

/** `POST /webhooks/stripe` with `event`, signed by the SDK with `secret`. */
async function stripeDelivery(
  request: TrafficContext["request"],
  event: unknown,
  secret = WEBHOOK_SECRET,
): Promise<Response> {
  const payload = JSON.stringify(event);
  return request("/webhooks/stripe", {
    method: "POST",
    headers: {
      "content-type": "application/json; charset=utf-8",
      "stripe-signature": await signStripe(payload, secret),
    },
    body: payload,
    from: STRIPE_ADDRESS,
  });
}

/** `POST /webhooks/whatsapp` with `payload`, signed with Node's HMAC and `secret`. */
function whatsappDelivery(
  request: TrafficContext["request"],
  payload: unknown,
  secret = WA_APP_SECRET,
): Promise<Response> {
  const body = JSON.stringify(payload);
  return request("/webhooks/whatsapp", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-hub-signature-256": signWhatsApp(body, secret),
    },
    body,
    from: META_ADDRESS,
  });
}

/** What the local OpenAI answers every turn (the chat's reply and the WhatsApp reply). */
const OPENAI_REPLY = "Palisade answers questions about your account.";
const STRIPE_ADDRESS = "54.187.174.169";
const META_ADDRESS = "173.252.88.1";
/**
 * The service's daily token budget and completion cap: a turn reserves its prompt's estimate plus
 * the cap, so the first turn of a principal fits; the upstream then reports more than that, the turn
 * is charged its whole reservation, and the next turn of that user no longer fits
 * (chat_requests_total{outcome="quota"}).
 */
const CHAT_DAILY_TOKEN_BUDGET = 150;
const CHAT_MAX_COMPLETION_TOKENS = 50;

/** One entry per kind of traffic; each asserts what the client saw, so the metrics are earned. */
const TRAFFIC: readonly Traffic[] = [
  {
    name: "sign-up, sign-in, reads, a 404 (requests, latency, in-flight, DB queries)",
    async drive({ request }) {
      const email = "proof-user@example.test";
      expect(
        (
          await request("/api/auth/register", {
            ...json({ email, password: STRONG_PASSWORD }),
            from: "198.51.100.1",
          })
        ).status,
      ).toBe(201);
      const login = await request("/api/auth/login", {
        ...json({ email, password: STRONG_PASSWORD }),
        from: "198.51.100.1",
      });
      expect(login.status).toBe(200);
      const { accessToken } = (await login.json()) as { accessToken: string };
      const me = await request("/api/auth/me", {
        headers: { authorization: `Bearer ${accessToken}` },
      });
      expect(me.status).toBe(200);
      expect((await request("/nowhere")).status).toBe(404);
      expect((await request("/api/auth/me")).status).toBe(401);
    },
  },
  {
    name: "failed logins until the account locks (auth failures, lockouts)",
    async drive({ request }) {
      const email = "proof-victim@example.test";
      expect(
        (
          await request("/api/auth/register", {
            ...json({ email, password: STRONG_PASSWORD }),
            from: "198.51.100.2",
          })
        ).status,
      ).toBe(201);
      // Ten failures from ten addresses lock the account; then even the right password is refused
      // locked. The lockout counts in a sliding window (15 min, weighted by the previous one): a
      // run that crosses a window boundary sees the count just under ten and needs one more
      // failure, so failures go on until the lock, which must come by the eleventh.
      const statuses: number[] = [];
      for (let i = 0; i < 11 && !statuses.includes(429); i++) {
        const response = await request("/api/auth/login", {
          ...json({ email, password: `${STRONG_PASSWORD}-wrong` }),
          from: `203.0.113.${10 + i}`,
        });
        statuses.push(response.status);
      }
      expect(statuses.slice(0, 10)).toEqual(Array(10).fill(401));
      const locked = await request("/api/auth/login", {
        ...json({ email, password: STRONG_PASSWORD }),
        from: "203.0.113.99",
      });
      expect(locked.status).toBe(429);
      expect(((await locked.json()) as { code: string }).code).toBe("RATE_LIMITED");
    },
  },
  {
    name: "a sign-up flood from one address (rate-limit rejections, an IP block)",
    async drive({ request }) {
      const statuses: number[] = [];
      for (let i = 0; i < 10; i++) {
        const response = await request("/api/auth/register", {
          ...json({ email: `flood${i}@example.test`, password: STRONG_PASSWORD }),
          from: "192.0.2.66",
        });
        statuses.push(response.status);
      }
      expect(statuses.slice(0, 3)).toEqual([201, 201, 201]);
      expect(statuses).toContain(429);
      // Five refusals block the address.
      expect(statuses.at(-1)).toBe(403);
    },
  },
  {
    name: "a cookie session without its CSRF token (CSRF failures)",
    async drive({ request }) {
      const email = "proof-browser@example.test";
      await request("/api/auth/register", {
        ...json({ email, password: STRONG_PASSWORD }),
        from: "198.51.100.3",
      });
      const login = await request("/api/auth/login?mode=cookie", {
        ...json({ email, password: STRONG_PASSWORD }),
        from: "198.51.100.3",
      });
      expect(login.status).toBe(200);
      const cookie = login.headers
        .getSetCookie()
        .map((line) => line.split(";")[0])
        .join("; ");
      const logout = await request("/api/auth/logout", {
        method: "POST",
        headers: { cookie },
        from: "198.51.100.3",
      });
      expect(logout.status).toBe(403);
      expect(((await logout.json()) as { code: string }).code).toBe("CSRF_FAILED");
    },
  },
  {
    name: "Stripe webhook: a forged signature, a good delivery (signature failures, webhook events)",
    async drive({ request }) {
      const event = stripeEvent("customer.created", { id: "cus_proof", object: "customer" });
      const forged = await stripeDelivery(request, event, "whsec_not_the_configured_secret_0123");
      // 400, not 401: what Stripe expects of a delivery it should not retry as is.
      expect(forged.status).toBe(400);
      expect(((await forged.json()) as { code: string }).code).toBe("BAD_SIGNATURE");
      const good = await stripeDelivery(request, event);
      expect(good.status).toBe(200);
      expect(await good.json()).toEqual({ received: true, outcome: "ignored" });
    },
  },
  {
    name: "WhatsApp webhook: a forged signature, a text answered through Graph (signature failures, webhook events, outbox)",
    async drive({ request, graph }) {
      const forged = await whatsappDelivery(
        request,
        whatsappNotification({ messages: [{ id: "wamid.forged", from: "16505550000" }] }),
        "not-the-configured-app-secret",
      );
      expect(forged.status).toBe(401);
      expect(((await forged.json()) as { code: string }).code).toBe("BAD_SIGNATURE");
      const sent = graph.sent.length;
      const good = await whatsappDelivery(
        request,
        whatsappNotification({
          messages: [{ id: "wamid.proof1", from: "16505551234", text: "What can you do?" }],
        }),
      );
      expect(good.status).toBe(200);
      expect(await good.json()).toMatchObject({ received: true, accepted: 1 });
      // The outbox worker answered it through the chat (the local OpenAI) and Graph.
      await graph.waitForSent(sent + 1, 10_000);
      expect(graph.sent.at(-1)).toMatchObject({ to: "16505551234", body: OPENAI_REPLY });
    },
  },
  {
    name: "chat through the OpenAI provider, then over the daily budget (chat requests, tokens, upstream latency, failed attempts and circuit, quota)",
    async drive({ request, openai }) {
      const user = await signedIn(request, "proof-chatter@example.test", "198.51.100.5");
      const calls = openai.requests.length;
      // A first attempt fails (a failed attempt counted) and the retry is answered; the upstream
      // reports a usage that spends the day's budget in one turn.
      openai.enqueue({ kind: "error", status: 500 });
      openai.enqueue({
        kind: "reply",
        text: OPENAI_REPLY,
        usage: { prompt: CHAT_DAILY_TOKEN_BUDGET, completion: 20 },
      });
      const turn = await request("/api/chat", {
        ...json({ message: "Hello there" }),
        headers: { ...json({}).headers, ...user },
        from: "198.51.100.5",
      });
      expect(turn.status).toBe(200);
      expect(((await turn.json()) as { reply: string }).reply).toBe(OPENAI_REPLY);
      expect(openai.requests.length).toBe(calls + 2);
      expect(openai.requests.at(-1)!.authorized).toBe(true);
      const refused = await request("/api/chat", {
        ...json({ message: "And again" }),
        headers: { ...json({}).headers, ...user },
        from: "198.51.100.5",
      });
      expect(refused.status).toBe(429);
      expect(((await refused.json()) as { code: string }).code).toBe("QUOTA_EXCEEDED");
      // Refused before the upstream was called.
      expect(openai.requests.length).toBe(calls + 2);
    },
  },
  {
    name: "a payment intent through Stripe, then a dispute on it (payments, dispute audit events)",
    async drive({ request, stripe }) {
      const user = await signedIn(request, "proof-payer@example.test", "198.51.100.6");
      const made = await request("/api/payments/intents", {
        ...json({ amount: 2500, currency: "usd" }),
        headers: { ...json({}).headers, ...user, "idempotency-key": "proof-intent-1" },
        from: "198.51.100.6",
      });
      expect(made.status).toBe(201);
      const intent = (await made.json()) as { id: string; status: string };
      expect(intent.status).toBe("requires_payment_method");
      expect(stripe.intents.has(intent.id)).toBe(true);
      const dispute = await stripeDelivery(
        request,
        stripeEvent("charge.dispute.created", {
          id: "dp_proof1",
          object: "dispute",
          charge: "ch_proof1",
          payment_intent: intent.id,
          amount: 2500,
          reason: "fraudulent",
        }),
      );
      expect(dispute.status).toBe(200);
      expect(await dispute.json()).toEqual({ received: true, outcome: "processed" });
      const payment = await request(`/api/payments/${intent.id}`, { headers: user });
      expect(payment.status).toBe(200);
      expect(((await payment.json()) as { disputed: boolean }).disputed).toBe(true);
    },
  },
  {
    name: "an API key written straight into the database file (credential tamper audit events)",
    async drive({ request, databasePath }) {
      const writer = new Database(databasePath);
      writer.run("PRAGMA busy_timeout = 5000");
      const key = generateApiKey("live");
      try {
        writer.run(
          `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin)
           VALUES ('proof-forged-key', 'forged', ?, ?, '["admin"]', NULL, 1, 'api')`,
          [keyPrefix(key), hashApiKey(key)],
        );
      } finally {
        writer.close();
      }
      const refused = await request("/api/admin/api-keys", {
        headers: { "x-api-key": key },
        from: "198.51.100.8",
      });
      expect(refused.status).toBe(401);
    },
  },
  {
    name: "a WhatsApp reply written straight into the database file (outbox tamper audit events)",
    async drive({ databasePath, graph }) {
      const sent = graph.sent.length;
      const file = new Database(databasePath);
      file.run("PRAGMA busy_timeout = 5000");
      try {
        file.run(
          `INSERT INTO whatsapp_outbox (message_id, phone_number_id, recipient, sender_hash, kind,
             reply, state, next_attempt_at, received_at)
           VALUES ('wamid.proof-forged', '123456789', '15550009999', 'forged', 'text',
             'Your account is locked: pay here', 'pending', 0, ?)`,
          [Date.now()],
        );
        // The worker polls every second: the row is given up, never sent.
        const stateOf = () =>
          file
            .query<{ state: string }, []>(
              "SELECT state FROM whatsapp_outbox WHERE message_id = 'wamid.proof-forged'",
            )
            .get()?.state;
        const until = Date.now() + 10_000;
        while (stateOf() === "pending" && Date.now() < until) await Bun.sleep(100);
        expect(stateOf()).toBe("failed");
      } finally {
        file.close();
      }
      expect(graph.sent.length).toBe(sent);
    },
  },
  {
    name: "a database locked by another process (5xx, limiter store errors)",
    async drive({ request, databasePath }) {
      const holder = new Database(databasePath);
      holder.run("PRAGMA busy_timeout = 5000");
      holder.run("BEGIN IMMEDIATE");
      try {
        const response = await request("/api/auth/login", {
          ...json({ email: "proof-user@example.test", password: STRONG_PASSWORD }),
          from: "198.51.100.4",
        });
        expect(response.status).toBe(503);
        expect(((await response.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
      } finally {
        holder.run("ROLLBACK");
        holder.close();
      }
    },
  },
];

const available = prometheusAvailable && promtoolAvailable && alertmanagerAvailable;

const ALERT_EMAIL = "oncall@example.org, security@example.org";

/**
 * Alertmanager's configuration as an operator writes it (`alerts:config --out`), with the relay on
 * the local SMTP server; only the grouping delay is shortened (30 s) so the test need not wait.
 */
async function alertmanagerConfig(dir: string, smtpPort: number): Promise<string> {
  const path = join(dir, "alertmanager.yml");
  const written = await cliInProcess(["alerts:config", "--out", path], {
    DATABASE_PATH: ":memory:",
    ALERT_EMAIL,
    ALERT_SMTP_SMARTHOST: `127.0.0.1:${smtpPort}`,
    ALERT_SMTP_FROM: "palisade-alerts@example.org",
  });
  if (written.code !== 0) throw new Error(`alerts:config: ${written.stderr}`);
  const config = Bun.YAML.parse(await Bun.file(path).text()) as { route: Record<string, unknown> };
  config.route.group_wait = "1s";
  await Bun.write(path, Bun.YAML.stringify(config, null, 2));
  return path;
}

describe.skipIf(!available)("dashboards and alerts against a real Prometheus", () => {
  // Made when the tests run, not when the file is read: a run that filters them out leaves none.
  let dir: ReturnType<typeof tempDir>;
  let service: ServiceProcess;
  let prometheus: PrometheusServer;
  let alertmanager: AlertmanagerServer;
  let smtp: SmtpServer;
  let openai: OpenAiServer;
  let stripe: FakeStripe;
  let graph: GraphServer;

  beforeAll(async () => {
    dir = tempDir("palisade-prometheus-");
    const databasePath = join(dir.path, "palisade.db");
    // One token file, newline and all, read by both sides as the README's walk-through sets it up.
    const tokenFile = join(dir.path, "metrics_token");
    await Bun.write(tokenFile, `${METRICS_TOKEN}\n`);
    openai = await startOpenAiServer({ reply: OPENAI_REPLY });
    stripe = startFakeStripe();
    graph = startGraphServer();
    service = await startService({
      DATABASE_PATH: databasePath,
      METRICS_TOKEN_FILE: tokenFile,
      LOG_LEVEL: "info",
      // Client addresses come from X-Forwarded-For, so the traffic can come from many.
      TRUST_PROXY: "loopback",
      // Enough login attempts per minute to reach the account lockout (10) from one account.
      RATE_LIMIT_LOGIN: "100",
      // Every feature on, each upstream a local server speaking its real wire protocol.
      OPENAI_API_KEY: openai.apiKey,
      OPENAI_BASE_URL: openai.url,
      CHAT_DAILY_TOKEN_BUDGET: String(CHAT_DAILY_TOKEN_BUDGET),
      CHAT_MAX_COMPLETION_TOKENS: String(CHAT_MAX_COMPLETION_TOKENS),
      STRIPE_SECRET_KEY: STRIPE_TEST_KEY,
      STRIPE_API_URL: stripe.url,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      WHATSAPP_APP_SECRET: WA_APP_SECRET,
      WHATSAPP_VERIFY_TOKEN: WA_VERIFY_TOKEN,
      WHATSAPP_ACCESS_TOKEN: graph.token,
      WHATSAPP_API_URL: graph.url,
    });
    smtp = startSmtpServer();
    alertmanager = await startAlertmanager(
      await alertmanagerConfig(dir.path, smtp.port),
      join(dir.path, "alertmanager"),
    );
    const proofRules = join(dir.path, "proof-rules.yml");
    await Bun.write(
      proofRules,
      Bun.YAML.stringify({
        groups: [
          {
            name: "proof",
            rules: [
              {
                alert: "PalisadeProofAlert",
                expr: 'up{job="palisade"} == 1',
                labels: { severity: "page" },
                annotations: { summary: "the delivery path works" },
              },
            ],
          },
        ],
      }),
    );
    const config = localPrometheusConfig(dir.path, {
      target: service.url.host,
      token: METRICS_TOKEN,
      tokenFile,
      alertmanager: alertmanager.url.host,
      extraRuleFiles: [proofRules],
    });
    prometheus = await startPrometheus(config, join(dir.path, "tsdb"));
    const context: TrafficContext = {
      databasePath,
      openai,
      stripe,
      graph,
      request(path, init = {}) {
        const { from, ...rest } = init;
        const headers = new Headers(rest.headers);
        if (from) headers.set("x-forwarded-for", from);
        return fetch(new URL(path, service.url), { ...rest, headers });
      },
    };
    for (const traffic of TRAFFIC) {
      try {
        await traffic.drive(context);
      } catch (error) {
        throw new Error(`traffic "${traffic.name}": ${error}`);
      }
    }
  }, 60_000);

  afterAll(async () => {
    await prometheus?.stop();
    await alertmanager?.stop();
    smtp?.stop();
    await service?.stop();
    openai?.stop();
    stripe?.stop();
    graph?.close();
    dir?.remove();
  });

  test("Prometheus scrapes the service with the bearer token", async () => {
    const deadline = Date.now() + 20_000;
    let up: unknown[] = [];
    while (Date.now() < deadline) {
      up = (await prometheus.query('up{job="palisade"} == 1')).result;
      if (up.length > 0) break;
      await Bun.sleep(250);
    }
    expect(up).toHaveLength(1);
    // And the token is what let it in: without it /metrics is 401.
    expect((await fetch(new URL("/metrics", service.url))).status).toBe(401);
  }, 30_000);

  test("every panel query and every alert rule's selectors return series", async () => {
    const expressions = [
      ...dashboardQueries().map((q) => ({ kind: "panel" as const, where: q.where, expr: q.expr })),
      ...ALERT_RULES.map((rule) => ({
        kind: "alert" as const,
        where: `alert ${rule.alert}`,
        expr: rule.expr,
      })),
    ];
    const problems = async () => {
      const found: string[] = [];
      for (const { kind, where, expr } of expressions) {
        const query = substituteGrafanaVariables(expr);
        let result: unknown[];
        try {
          result = (await prometheus.query(query)).result;
        } catch (error) {
          found.push(`${where}: does not evaluate: ${error}`);
          continue;
        }
        if (kind === "panel" && result.length === 0) found.push(`${where}: no series: ${query}`);
        for (const selector of metricSelectors(expr)) {
          const series = (await prometheus.query(selector.text)).result;
          if (series.length === 0) found.push(`${where}: selector ${selector.text} has no series`);
        }
      }
      return found;
    };
    // Rates need two scrapes after the traffic: poll until everything holds or time is up.
    const deadline = Date.now() + 30_000;
    let found = await problems();
    while (found.length > 0 && Date.now() < deadline) {
      await Bun.sleep(1000);
      found = await problems();
    }
    expect(found).toEqual([]);
    console.log(`prometheus proof: ${expressions.length} expressions evaluated`);
  }, 60_000);

  test("Prometheus loaded every shipped rule and each evaluates without error", async () => {
    const deadline = Date.now() + 20_000;
    type Rule = { name: string; health: string; lastError?: string };
    let rules: Rule[] = [];
    while (Date.now() < deadline) {
      const response = await fetch(new URL("/api/v1/rules", prometheus.url));
      const body = (await response.json()) as {
        data: { groups: { name: string; rules: Rule[] }[] };
      };
      rules = body.data.groups.find((group) => group.name === "palisade")?.rules ?? [];
      if (rules.length > 0 && rules.every((rule) => rule.health !== "unknown")) break;
      await Bun.sleep(250);
    }
    expect(rules.map((rule) => rule.name).sort()).toEqual(
      ALERT_RULES.map((rule) => rule.alert).sort(),
    );
    for (const rule of rules) {
      expect({ rule: rule.name, health: rule.health, error: rule.lastError ?? "" }).toEqual({
        rule: rule.name,
        health: "ok",
        error: "",
      });
    }
  }, 30_000);

  test("a firing alert is mailed to every ALERT_EMAIL address through the relay", async () => {
    const deadline = Date.now() + 40_000;
    const proof = () =>
      smtp.messages.find((mail) => mail.data.includes("PalisadeProofAlert")) ?? null;
    while (proof() === null && Date.now() < deadline) await Bun.sleep(250);
    const mail = proof();
    if (mail === null) {
      throw new Error(`no alert mail arrived; alertmanager said:\n${alertmanager.logs()}`);
    }
    expect(mail.from).toBe("palisade-alerts@example.org");
    expect(mail.to.sort()).toEqual(["oncall@example.org", "security@example.org"]);
    expect(mail.data).toMatch(/^Subject: .*FIRING.*PalisadeProofAlert/m);
    expect(mail.data).toContain("the delivery path works");
  }, 60_000);

  test("promtool check metrics accepts the service's /metrics (prom-client's own names aside)", async () => {
    const scrape = await fetch(new URL("/metrics", service.url), {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(scrape.status).toBe(200);
    const text = await scrape.text();
    const result = await check("promtool", ["check", "metrics"], text);
    // Exit 3 is lint findings only; 1 would be a text that does not parse.
    expect([0, 3]).toContain(result.code);
    const findings = `${result.stdout}${result.stderr}`
      .split("\n")
      .filter((line) => line.trim() !== "");
    // prom-client's default metrics name three gauges *_total; ours must have no finding at all.
    const library =
      /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/;
    expect(findings.filter((line) => !library.test(line))).toEqual([]);
    // With every feature on, every family is a contract name the dashboards can import, or
    // prom-client's own (process_*, nodejs_*).
    const families = [...text.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1]!);
    const contract = new Set<string>(CONTRACT_METRIC_NAMES);
    expect(
      families.filter((name) => !contract.has(name) && !/^(process|nodejs)_/.test(name)),
    ).toEqual([]);
    expect(CONTRACT_METRIC_NAMES.filter((name) => !families.includes(name))).toEqual([]);
  });
});
