/**
 * @module
 * The two Grafana dashboards, built with Grafana's foundation SDK from the metric names in
 * `src/plugins/metrics/names.ts` (one spelling: a renamed metric is a compile error here, not a
 * panel that silently shows nothing). `bun run dashboards` writes them to `grafana/dashboards/`;
 * a test regenerates them in memory and fails when the committed JSON differs.
 *
 * Every query is PromQL over the Prometheus datasource provisioned with uid `prometheus`
 * (`grafana/provisioning/datasources/prometheus.yaml`). Rates use Grafana's `$__rate_interval`;
 * the Prometheus proof test (test/observability/prometheus.test.ts) substitutes a window for it
 * and runs every query against a real Prometheus.
 *
 * Aggregation across processes: counters and histograms are summed over every scraped process
 * (each `METRICS_PORT` listener is its own target); `ip_blocks_active` and
 * `whatsapp_outbox_pending` read one shared table, so every process reports the same number and
 * they are taken with `max`, never summed.
 */
import * as common from "@grafana/grafana-foundation-sdk/common";
import * as dashboard from "@grafana/grafana-foundation-sdk/dashboard";
import * as prometheus from "@grafana/grafana-foundation-sdk/prometheus";
import * as stat from "@grafana/grafana-foundation-sdk/stat";
import * as timeseries from "@grafana/grafana-foundation-sdk/timeseries";
import { METRIC, PROCESS_METRIC } from "../../src/plugins/metrics/names";
import { NOT_PROBES, SERVED_REQUESTS, SERVER_ERRORS } from "./alerts";

/** The datasource every panel reads, as provisioned. */
export const DATASOURCE = { type: "prometheus", uid: "prometheus" } as const;

const RATE = "$__rate_interval";

interface Query {
  expr: string;
  legend: string;
}

interface PanelSpec {
  title: string;
  description: string;
  unit: string;
  queries: readonly Query[];
  /** A single number rather than a graph. */
  stat?: boolean;
  /** Grid width out of 24 (12 by default). */
  width?: number;
}

interface RowSpec {
  title: string;
  panels: readonly PanelSpec[];
}

export interface DashboardSpec {
  uid: string;
  title: string;
  description: string;
  /** The output file in grafana/dashboards/. */
  file: string;
  rows: readonly RowSpec[];
}

const q = (expr: string, legend: string): Query => ({ expr, legend });

/** Counter rate summed across processes, grouped by `by` (none: one series). */
const rateBy = (metric: string, by: string, selector = "") =>
  by === ""
    ? `sum(rate(${metric}${selector}[${RATE}]))`
    : `sum by (${by}) (rate(${metric}${selector}[${RATE}]))`;

const quantile = (phi: number, metric: string, by: string) =>
  `histogram_quantile(${phi}, sum by (le, ${by}) (rate(${metric}_bucket[${RATE}])))`;

export const SECURITY_DASHBOARD: DashboardSpec = {
  uid: "palisade-security",
  title: "Palisade: security overview",
  description:
    "Refusals by the defences. Per-address detail is not in metric labels: GET /api/admin/security/summary or bun run cli audit:top.",
  file: "security.json",
  rows: [
    {
      title: "Refusals",
      panels: [
        {
          title: "Rate-limit rejections by policy",
          description:
            "Requests answered 429 RATE_LIMITED, per second, by the policy that refused (login_account: the per-account sign-in limit); locked_out: requests of a user or API key locked out for its earlier refusals; login_lockout: sign-ins to an account locked for failed sign-ins; large_bodies: a large request body past its client's or network's share of the bodies read at once",
          unit: "reqps",
          queries: [q(rateBy(METRIC.rateLimitRejections, "policy"), "{{policy}}")],
        },
        {
          title: "Active IP blocks",
          description:
            "Addresses blocked right now (automatic and admin blocks); every process reads the same table, so max",
          unit: "short",
          stat: true,
          width: 6,
          queries: [q(`max(${METRIC.ipBlocksActive})`, "blocked addresses")],
        },
        {
          title: "CSRF failures",
          description: "State-changing browser requests refused 403 CSRF_FAILED, per second",
          unit: "reqps",
          width: 6,
          queries: [q(rateBy(METRIC.csrfFailures, ""), "CSRF failures")],
        },
        {
          title: "Auth failures by reason",
          description:
            "Requests refused for their credentials or permissions (bad_password, invalid_token, forbidden, metrics_token, …)",
          unit: "reqps",
          queries: [q(rateBy(METRIC.authFailures, "reason"), "{{reason}}")],
        },
        {
          title: "Account lockouts",
          description:
            "auth.login.locked: a login refused while its account is locked; auth.locked_out: a principal locked out for its rate-limit refusals",
          unit: "short",
          queries: [
            q(
              `sum by (type) (increase(${METRIC.auditEvents}{type=~"auth.login.locked|auth.locked_out"}[${RATE}]))`,
              "{{type}}",
            ),
          ],
        },
        {
          title: "Webhook signature failures by provider",
          description:
            "Deliveries refused 401 BAD_SIGNATURE: a misconfigured secret or someone forging events",
          unit: "reqps",
          queries: [q(rateBy(METRIC.webhookSignatureFailures, "provider"), "{{provider}}")],
        },
        {
          title: "Token budget and concurrent-turn refusals",
          description:
            "Chat turns refused 429 QUOTA_EXCEEDED over CHAT_DAILY_TOKEN_BUDGET, and 429 TOO_MANY_TURNS past CHAT_MAX_CONCURRENT_TURNS",
          unit: "reqps",
          queries: [
            q(rateBy(METRIC.chatRequests, "provider", '{outcome="quota"}'), "{{provider}} budget"),
            q(
              rateBy(METRIC.chatRequests, "provider", '{outcome="concurrent"}'),
              "{{provider}} concurrent",
            ),
          ],
        },
      ],
    },
    {
      title: "Responses and events",
      panels: [
        {
          title: "4xx and 5xx by route",
          description:
            "Error responses per second, by route pattern and status (a 501 asked for a feature not configured)",
          unit: "reqps",
          width: 24,
          queries: [
            q(
              rateBy(METRIC.httpRequests, "route, status", '{status=~"4..|5.."}'),
              "{{status}} {{route}}",
            ),
          ],
        },
        {
          title: "Audit events by type",
          description: "Security events recorded in the audit log, per second",
          unit: "ops",
          width: 24,
          queries: [q(rateBy(METRIC.auditEvents, "type"), "{{type}}")],
        },
      ],
    },
  ],
};

export const SERVICE_DASHBOARD: DashboardSpec = {
  uid: "palisade-service",
  title: "Palisade: service",
  description: "Traffic, latency, errors, the runtime, the database, upstreams and the features.",
  file: "service.json",
  rows: [
    {
      title: "Traffic",
      panels: [
        {
          title: "Request rate by route",
          description: "Requests answered per second, by route pattern",
          unit: "reqps",
          queries: [q(rateBy(METRIC.httpRequests, "route"), "{{route}}")],
        },
        {
          title: "Error ratio",
          description:
            "Share of the requests served (not refusals, 4xx, nor /health, /ready, /metrics, nor CORS preflights) that are 5xx, but 501 NOT_CONFIGURED (a feature not configured), as the alert counts them (it fires over 5 %)",
          unit: "percentunit",
          queries: [
            q(
              `(sum(rate(${METRIC.httpRequests}{${SERVER_ERRORS},${NOT_PROBES}}[${RATE}])) or vector(0)) / sum(rate(${METRIC.httpRequests}{${SERVED_REQUESTS}}[${RATE}]))`,
              "5xx ratio",
            ),
          ],
        },
        {
          title: "Latency by route (p50, p95, p99)",
          description: "From receiving a request to sending its response, by route pattern",
          unit: "s",
          width: 24,
          queries: [
            q(quantile(0.5, METRIC.httpRequestDuration, "route"), "p50 {{route}}"),
            q(quantile(0.95, METRIC.httpRequestDuration, "route"), "p95 {{route}}"),
            q(quantile(0.99, METRIC.httpRequestDuration, "route"), "p99 {{route}}"),
          ],
        },
        {
          title: "In-flight requests",
          description: "Received and not yet answered, summed over processes",
          unit: "short",
          queries: [q(`sum(${METRIC.httpRequestsInFlight})`, "in flight")],
        },
      ],
    },
    {
      title: "Runtime and database",
      panels: [
        {
          title: "Event-loop lag",
          description:
            "prom-client's event-loop monitor, per process (Bun implements it): p99 and mean",
          unit: "s",
          queries: [
            q(`max by (instance) (${PROCESS_METRIC.eventLoopLagP99})`, "p99 {{instance}}"),
            q(`max by (instance) (${PROCESS_METRIC.eventLoopLagMean})`, "mean {{instance}}"),
          ],
        },
        {
          title: "Memory",
          description: "Resident set size and JavaScript heap in use, per process",
          unit: "bytes",
          queries: [
            q(`sum by (instance) (${PROCESS_METRIC.residentMemory})`, "RSS {{instance}}"),
            q(`sum by (instance) (${PROCESS_METRIC.heapUsed})`, "heap {{instance}}"),
          ],
        },
        {
          title: "DB query time by operation (p95)",
          description: "Time one SQL statement took, by operation (select, insert, …)",
          unit: "s",
          queries: [q(quantile(0.95, METRIC.dbQueryDuration, "operation"), "p95 {{operation}}")],
        },
        {
          title: "DB queries by operation",
          description: "SQL statements per second, by operation",
          unit: "ops",
          queries: [q(rateBy(`${METRIC.dbQueryDuration}_count`, "operation"), "{{operation}}")],
        },
        {
          title: "WAL size",
          description:
            "The database's -wal file (one file for every process, so max); past WAL_TRUNCATE_MB it is truncated unless a long transaction on the file holds it",
          unit: "bytes",
          queries: [q(`max(${METRIC.dbWalSize})`, "WAL")],
        },
        {
          title: "WAL truncations by outcome",
          description:
            "TRUNCATE checkpoints of a WAL past WAL_TRUNCATE_MB per second: busy ones with none truncated while the WAL grows are a long transaction holding it (PalisadeWalHeld)",
          unit: "ops",
          queries: [q(rateBy(METRIC.dbWalTruncateCheckpoints, "outcome"), "{{outcome}}")],
        },
      ],
    },
    {
      title: "Upstreams and features",
      panels: [
        {
          title: "Upstream latency (p95)",
          description: "One request to the chat upstream (a stream until its last chunk)",
          unit: "s",
          queries: [
            q(quantile(0.95, METRIC.upstreamRequestDuration, "provider"), "p95 {{provider}}"),
          ],
        },
        {
          title: "Upstream circuit state",
          description: "1 while the provider's circuit breaker is open or half-open",
          unit: "short",
          queries: [q(`max by (provider) (${METRIC.upstreamCircuitOpen})`, "{{provider}}")],
        },
        {
          title: "Chat tokens",
          description: "Tokens spent per second, by kind (prompt, completion)",
          unit: "short",
          queries: [q(rateBy(METRIC.chatTokens, "kind"), "{{kind}}")],
        },
        {
          title: "Chat turns by outcome",
          description: "ok, incomplete, quota, upstream_error, …",
          unit: "reqps",
          queries: [q(rateBy(METRIC.chatRequests, "outcome"), "{{outcome}}")],
        },
        {
          title: "Chat reservations given back",
          description:
            "Turns whose budget reservations were given back: their process stopped mid-turn (a crash shows here a minute later) or their storing failed",
          unit: "ops",
          queries: [q(rateBy(METRIC.chatReservationsReclaimed, ""), "given back")],
        },
        {
          title: "Payments by status",
          description: "Payments entering each status, per second",
          unit: "ops",
          queries: [q(rateBy(METRIC.payments, "status"), "{{status}}")],
        },
        {
          title: "WhatsApp outbox backlog",
          description: "Replies accepted and not yet sent or given up (one shared table, so max)",
          unit: "short",
          queries: [q(`max(${METRIC.whatsappOutboxPending})`, "pending")],
        },
      ],
    },
  ],
};

export const DASHBOARDS: readonly DashboardSpec[] = [SECURITY_DASHBOARD, SERVICE_DASHBOARD];

function panelOf(spec: PanelSpec, id: number, x: number, y: number) {
  const width = spec.width ?? 12;
  const builder = spec.stat
    ? new stat.PanelBuilder()
    : new timeseries.PanelBuilder().legend(
        new common.VizLegendOptionsBuilder()
          .showLegend(true)
          .displayMode(common.LegendDisplayMode.List)
          .placement(common.LegendPlacement.Bottom),
      );
  builder
    .id(id)
    .title(spec.title)
    .description(spec.description)
    .datasource(DATASOURCE)
    .unit(spec.unit)
    .gridPos({ h: 8, w: width, x, y });
  spec.queries.forEach((query, i) => {
    builder.withTarget(
      new prometheus.DataqueryBuilder()
        .datasource(DATASOURCE)
        .refId(String.fromCharCode(65 + i))
        .expr(query.expr)
        .legendFormat(query.legend),
    );
  });
  return builder;
}

/** The dashboard as Grafana's JSON model. */
export function buildDashboard(spec: DashboardSpec): dashboard.Dashboard {
  const builder = new dashboard.DashboardBuilder(spec.title)
    .uid(spec.uid)
    .description(spec.description)
    .tags(["palisade"])
    .editable()
    .tooltip(dashboard.DashboardCursorSync.Crosshair)
    .refresh("30s")
    .time({ from: "now-6h", to: "now" })
    .timezone("browser");
  let id = 1;
  let y = 0;
  for (const row of spec.rows) {
    builder.withRow(new dashboard.RowBuilder(row.title).id(id++).gridPos({ h: 1, w: 24, x: 0, y }));
    y += 1;
    let x = 0;
    for (const panel of row.panels) {
      const width = panel.width ?? 12;
      if (x + width > 24) {
        x = 0;
        y += 8;
      }
      builder.withPanel(panelOf(panel, id++, x, y));
      x += width;
    }
    y += 8;
  }
  return builder.build();
}

/** The file's text as committed: stable key order from the builder, two-space indent. */
export function renderDashboard(spec: DashboardSpec): string {
  return `${JSON.stringify(buildDashboard(spec), null, 2)}\n`;
}

/** Every PromQL expression of every panel, with where it comes from. */
export function dashboardQueries(): { where: string; expr: string }[] {
  return DASHBOARDS.flatMap((spec) =>
    spec.rows.flatMap((row) =>
      row.panels.flatMap((panel) =>
        panel.queries.map((query) => ({
          where: `${spec.file}: ${panel.title}`,
          expr: query.expr,
        })),
      ),
    ),
  );
}
