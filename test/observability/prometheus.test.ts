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
 * Adding traffic for a feature is one entry in TRAFFIC. Expressions over metrics that no traffic
 * here can produce yet (features built on other branches) are listed in PENDING_SELECTORS, printed
 * at every run, still required to evaluate without error, and the test fails if one of them starts
 * returning series (so the list is emptied as the traffic lands, never left stale).
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
import { tempDir } from "../support/app";
import { STRONG_PASSWORD } from "../support/auth";
import { cliInProcess } from "../support/cli";
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

/**
 * Selectors no traffic on this branch produces: chat, upstreams, payments and webhooks are merged
 * from their branches by the lead, who adds their TRAFFIC entries and empties this list.
 */
export const PENDING_SELECTORS: readonly string[] = [
  "webhook_signature_failures_total",
  "webhook_events_total",
  'chat_requests_total{outcome="quota"}',
  "chat_requests_total",
  "chat_tokens_total",
  "upstream_request_duration_seconds_bucket",
  "upstream_circuit_open",
  "payments_total",
  "whatsapp_outbox_pending",
  'audit_events_total{type="payment.dispute.created"}',
];

const METRICS_TOKEN = "proof-Metrics-Token-7f3a9c2e5b8d1046";

interface TrafficContext {
  /** A request to the service as if from `address` (the service trusts loopback proxies). */
  request(path: string, init?: RequestInit & { from?: string }): Promise<Response>;
  databasePath: string;
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
      // Ten failures from ten addresses lock the account; the eleventh attempt is refused locked.
      for (let i = 0; i < 10; i++) {
        const response = await request("/api/auth/login", {
          ...json({ email, password: `${STRONG_PASSWORD}-wrong` }),
          from: `203.0.113.${10 + i}`,
        });
        expect(response.status).toBe(401);
      }
      const locked = await request("/api/auth/login", {
        ...json({ email, password: STRONG_PASSWORD }),
        from: "203.0.113.99",
      });
      expect(locked.status).toBe(429);
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

const pendingIn = (expr: string) =>
  metricSelectors(expr).filter(
    (selector) =>
      PENDING_SELECTORS.includes(selector.text) || PENDING_SELECTORS.includes(selector.name),
  );

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
  const dir = tempDir("palisade-prometheus-");
  let service: ServiceProcess;
  let prometheus: PrometheusServer;
  let alertmanager: AlertmanagerServer;
  let smtp: SmtpServer;

  beforeAll(async () => {
    const databasePath = join(dir.path, "palisade.db");
    // One token file, newline and all, read by both sides as the README's walk-through sets it up.
    const tokenFile = join(dir.path, "metrics_token");
    await Bun.write(tokenFile, `${METRICS_TOKEN}\n`);
    service = await startService({
      DATABASE_PATH: databasePath,
      METRICS_TOKEN_FILE: tokenFile,
      LOG_LEVEL: "info",
      // Client addresses come from X-Forwarded-For, so the traffic can come from many.
      TRUST_PROXY: "loopback",
      // Enough login attempts per minute to reach the account lockout (10) from one account.
      RATE_LIMIT_LOGIN: "100",
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
    console.log(
      `prometheus proof: pending until their traffic lands (PENDING_SELECTORS): ${PENDING_SELECTORS.join(", ")}`,
    );
  }, 60_000);

  afterAll(async () => {
    await prometheus?.stop();
    await alertmanager?.stop();
    smtp?.stop();
    await service?.stop();
    dir.remove();
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
        const pending = pendingIn(expr);
        let result: unknown[];
        try {
          result = (await prometheus.query(query)).result;
        } catch (error) {
          found.push(`${where}: does not evaluate: ${error}`);
          continue;
        }
        if (pending.length > 0) continue;
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
    console.log(
      `prometheus proof: ${expressions.length} expressions evaluated, ` +
        `${expressions.filter((e) => pendingIn(e.expr).length > 0).length} pending`,
    );
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

  test("PENDING_SELECTORS lists only what has no series yet", async () => {
    for (const selector of PENDING_SELECTORS) {
      const series = (await prometheus.query(selector)).result;
      // Series here means the traffic landed: remove the selector from PENDING_SELECTORS.
      expect({ selector, series: series.length }).toEqual({ selector, series: 0 });
    }
  });

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
  });
});
