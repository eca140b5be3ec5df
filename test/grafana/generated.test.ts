/**
 * The Grafana and Prometheus files: the committed dashboards, rule file and example Alertmanager
 * configuration are what `bun run dashboards` generates; every query names only metrics the code
 * spells in names.ts; the provisioning points at what compose.yaml mounts; and Debian's promtool
 * and amtool accept the files (skipped where not installed, a failure in CI).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ALERT_RULES } from "../../grafana/src/alerts";
import { DASHBOARDS, DATASOURCE, dashboardQueries } from "../../grafana/src/dashboards";
import { generatedFiles } from "../../grafana/src/generate";
import { METRIC, PROCESS_METRIC } from "../../src/plugins/metrics/names";
import { tempDir } from "../support/app";
import { REPO_ROOT } from "../support/process";
import {
  amtoolAvailable,
  check,
  GRAFANA_DIR,
  localPrometheusConfig,
  promtoolAvailable,
} from "../support/prometheus";
import { metricSelectors } from "../support/promql";

const read = (path: string) => readFileSync(join(GRAFANA_DIR, path), "utf8");

/**
 * A promtool case builder for one rule: its input series, evaluated at `evalTime`, expecting the
 * rule to fire (with its labels and annotations, the summary's value as promtool writes it:
 * `summaryValue` replaces its template) or not.
 */
function ruleCase(
  rule: (typeof ALERT_RULES)[number],
  evalTime: string,
  summaryValue: [template: string, written: string],
  /** Labels the alert carries beyond the rule's (those its expression keeps, `by (provider)`). */
  labels: Record<string, string> = {},
) {
  return (input_series: { series: string; values: string }[], fires: boolean) => ({
    interval: "1m",
    input_series,
    alert_rule_test: [
      {
        eval_time: evalTime,
        alertname: rule.alert,
        exp_alerts: fires
          ? [
              {
                exp_labels: { ...rule.labels, ...labels },
                exp_annotations: {
                  ...rule.annotations,
                  summary: rule.annotations.summary.replace(...summaryValue),
                },
              },
            ]
          : [],
      },
    ],
  });
}

/** The openai upstream's failed attempts by kind, and its attempts, as promtool input series. */
function upstreamAttempts(failures: Record<string, string>, attempts: string) {
  return [
    ...Object.entries(failures).map(([kind, values]) => ({
      series: `upstream_attempt_failures_total{provider="openai",kind="${kind}"}`,
      values,
    })),
    { series: 'upstream_request_duration_seconds_count{provider="openai"}', values: attempts },
  ];
}

/** Runs `promtool test rules` on these unit tests of the shipped rules; they must all pass. */
async function passesPromtoolTests(tests: object): Promise<void> {
  const dir = tempDir();
  try {
    const path = join(dir.path, "rules.test.yml");
    await Bun.write(path, Bun.YAML.stringify(tests, null, 2));
    const result = await check("promtool", ["test", "rules", path]);
    expect({ code: result.code, out: result.stdout + result.stderr }).toMatchObject({ code: 0 });
  } finally {
    dir.remove();
  }
}

describe("generated files", () => {
  test("the committed dashboards, alert rules and Alertmanager example are what bun run dashboards writes", () => {
    const files = generatedFiles();
    expect([...files.keys()].sort()).toEqual([
      "alertmanager.yml",
      "alerts.yml",
      "dashboards/security.json",
      "dashboards/service.json",
    ]);
    for (const [path, text] of files) {
      // A difference here means a spec changed without `bun run dashboards` (or a hand edit).
      expect({ path, text: read(path) }).toEqual({ path, text });
    }
  });

  test("every query and rule names only metrics spelled in names.ts (or Prometheus's up)", () => {
    const known = new Set<string>([
      ...Object.values(METRIC),
      ...Object.values(PROCESS_METRIC),
      "up",
    ]);
    const histogramParts = (name: string) => name.replace(/_(bucket|count|sum)$/, "");
    const expressions = [
      ...dashboardQueries().map((q) => ({ where: q.where, expr: q.expr })),
      ...ALERT_RULES.map((rule) => ({ where: rule.alert, expr: rule.expr })),
    ];
    expect(expressions.length).toBeGreaterThan(25);
    for (const { where, expr } of expressions) {
      const selectors = metricSelectors(expr);
      expect({ where, count: selectors.length > 0 }).toEqual({ where, count: true });
      for (const selector of selectors) {
        const name = histogramParts(selector.name);
        expect({ where, name, known: known.has(name) || known.has(selector.name) }).toEqual({
          where,
          name,
          known: true,
        });
      }
    }
  });

  test("the dashboards cover what the issue lists, each panel on the provisioned datasource", () => {
    const titles = DASHBOARDS.flatMap((d) => d.rows.flatMap((r) => r.panels.map((p) => p.title)));
    for (const wanted of [
      "Rate-limit rejections by policy",
      "Active IP blocks",
      "Auth failures by reason",
      "Account lockouts",
      "CSRF failures",
      "Webhook signature failures by provider",
      "4xx and 5xx by route",
      "Audit events by type",
      "Token budget and concurrent-turn refusals",
      "Request rate by route",
      "Latency by route (p50, p95, p99)",
      "Error ratio",
      "In-flight requests",
      "Event-loop lag",
      "Memory",
      "DB query time by operation (p95)",
      "Upstream latency (p95)",
      "Upstream circuit state",
      "Chat tokens",
      "Payments by status",
      "WhatsApp outbox backlog",
    ]) {
      expect(titles).toContain(wanted);
    }
    const datasources = Bun.YAML.parse(read("provisioning/datasources/prometheus.yaml")) as {
      datasources: { uid: string; type: string }[];
    };
    expect(datasources.datasources[0]).toMatchObject(DATASOURCE);
    for (const file of ["dashboards/security.json", "dashboards/service.json"]) {
      const model = JSON.parse(read(file)) as {
        uid: string;
        panels: { type: string; datasource?: unknown; targets?: { datasource: unknown }[] }[];
      };
      const panels = model.panels.filter((panel) => panel.type !== "row");
      expect(panels.length).toBeGreaterThan(5);
      for (const panel of panels) {
        expect(panel.datasource).toEqual(DATASOURCE);
        for (const target of panel.targets ?? []) expect(target.datasource).toEqual(DATASOURCE);
      }
    }
  });

  test("compose mounts the provisioning and dashboards where the provider reads them", () => {
    const provider = Bun.YAML.parse(read("provisioning/dashboards/palisade.yaml")) as {
      providers: { type: string; options: { path: string } }[];
    };
    const compose = Bun.YAML.parse(readFileSync(join(REPO_ROOT, "compose.yaml"), "utf8")) as {
      services: Record<string, { volumes?: string[]; secrets?: unknown[] }>;
    };
    const grafana = compose.services.grafana!.volumes ?? [];
    expect(grafana).toContain(`./grafana/dashboards:${provider.providers[0]!.options.path}:ro`);
    expect(grafana).toContain("./grafana/provisioning:/etc/grafana/provisioning:ro");
    const prometheus = compose.services.prometheus!.volumes ?? [];
    expect(prometheus).toContain("./grafana/prometheus.yml:/etc/prometheus/prometheus.yml:ro");
    expect(prometheus).toContain("./grafana/alerts.yml:/etc/prometheus/alerts.yml:ro");
    expect(compose.services.alertmanager).toBeDefined();
  });

  test("every alert has a summary, a description and a runbook line in the README", () => {
    const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("\n### Alerts"));
    expect(section.length).toBeGreaterThan(100);
    expect(ALERT_RULES.length).toBe(15);
    for (const rule of ALERT_RULES) {
      expect(rule.annotations.summary.length).toBeGreaterThan(10);
      expect(rule.annotations.description.length).toBeGreaterThan(20);
      expect(rule.annotations.runbook).toContain(rule.alert);
      expect({ alert: rule.alert, inReadme: section.includes(`\`${rule.alert}\``) }).toEqual({
        alert: rule.alert,
        inReadme: true,
      });
    }
  });
});

describe.skipIf(!promtoolAvailable)("promtool", () => {
  test("check rules accepts grafana/alerts.yml", async () => {
    const result = await check("promtool", ["check", "rules", join(GRAFANA_DIR, "alerts.yml")]);
    expect(result.stdout).toContain("SUCCESS: 15 rules found");
    expect(result.code).toBe(0);
  });

  test("PalisadeUpstreamRefusing fires when half the attempts are refused for their content, not for a few (promtool test rules; probe 55a F3)", async () => {
    const rule = ALERT_RULES.find((each) => each.alert === "PalisadeUpstreamRefusing")!;
    const at = ruleCase(rule, "35m", ["{{ $labels.provider }}", "openai"], { provider: "openai" });
    await passesPromtoolTests({
      rule_files: [join(GRAFANA_DIR, "alerts.yml")],
      evaluation_interval: "1m",
      tests: [
        at(upstreamAttempts({ refused: "0+20x40" }, "0+20x40"), true),
        // A user's text refused now and then among many answered requests: nothing.
        at(upstreamAttempts({ refused: "0+1x40" }, "0+20x40"), false),
      ],
    });
  });

  test("PalisadeUpstreamFailing fires at half the attempts failing, the retried outage whose callers leave, and not on the upstream's refusals (promtool test rules; re-probe 15e F1)", async () => {
    const rule = ALERT_RULES.find((each) => each.alert === "PalisadeUpstreamFailing")!;
    const at = ruleCase(rule, "15m", ["{{ $labels.provider }}", "openai"], { provider: "openai" });
    await passesPromtoolTests({
      rule_files: [join(GRAFANA_DIR, "alerts.yml")],
      evaluation_interval: "1m",
      tests: [
        // Each request fails one attempt and its caller leaves during the retry: 1 of 2.
        at(upstreamAttempts({ unavailable: "0+10x20", refused: "0x20" }, "0+20x20"), true),
        // The upstream up, refusing users' prompts: no outage.
        at(upstreamAttempts({ unavailable: "0x20", refused: "0+20x20" }, "0+20x20"), false),
        // A few failed attempts among many answered ones: no page.
        at(upstreamAttempts({ unavailable: "0+2x20", refused: "0x20" }, "0+20x20"), false),
      ],
    });
  });

  test("PalisadeLatencyP99High leaves chat turns out, which last as long as the model writes, and fires on slow other routes (promtool test rules; probe 85f F1)", async () => {
    const rule = ALERT_RULES.find((each) => each.alert === "PalisadeLatencyP99High")!;
    const histogram = (route: string, underOne: string, underThree: string, all: string) =>
      [
        ["1", underOne],
        ["2.5", underThree],
        ["+Inf", all],
      ].map(([le, values]) => ({
        series: `http_request_duration_seconds_bucket{instance="a",method="GET",route="${route}",le="${le}"}`,
        values: values!,
      }));
    const tests = {
      rule_files: [join(GRAFANA_DIR, "alerts.yml")],
      evaluation_interval: "1m",
      tests: [
        {
          // Every other request fast; one in eleven a chat turn of 1–2.5 s.
          interval: "1m",
          input_series: [
            ...histogram("/api/chat", "0x30", "0+100x30", "0+100x30"),
            ...histogram("/health", "0+1000x30", "0+1000x30", "0+1000x30"),
          ],
          alert_rule_test: [
            { eval_time: "25m", alertname: "PalisadeLatencyP99High", exp_alerts: [] },
          ],
        },
        {
          // Another route slow: a ticket.
          interval: "1m",
          input_series: [
            ...histogram("/api/chat", "0x30", "0+100x30", "0+100x30"),
            ...histogram("/health", "0+900x30", "0+1000x30", "0+1000x30"),
          ],
          alert_rule_test: [
            {
              eval_time: "25m",
              alertname: "PalisadeLatencyP99High",
              exp_alerts: [
                {
                  exp_labels: { severity: "ticket" },
                  // 90 % under a second, the rest under 2.5: the 99th at 2.35 s.
                  exp_annotations: { ...rule.annotations, summary: "p99 latency is 2.35s" },
                },
              ],
            },
          ],
        },
      ],
    };
    await passesPromtoolTests(tests);
  });

  test("PalisadeWalHeld fires when every TRUNCATE of the WAL is busy for 15 minutes, not when one truncated among them (promtool test rules; probe 46c F1)", async () => {
    const rule = ALERT_RULES.find((each) => each.alert === "PalisadeWalHeld")!;
    const checkpoints = (busy: string, truncated: string) => [
      { series: 'db_wal_truncate_checkpoints_total{instance="a",outcome="busy"}', values: busy },
      {
        series: 'db_wal_truncate_checkpoints_total{instance="a",outcome="truncated"}',
        values: truncated,
      },
    ];
    const tests = {
      rule_files: [join(GRAFANA_DIR, "alerts.yml")],
      evaluation_interval: "1m",
      tests: [
        {
          // A reader holds the WAL: two busy tries a minute (every 30 s), none truncated.
          interval: "1m",
          input_series: checkpoints("0+2x30", "3x30"),
          alert_rule_test: [
            // Ten minutes into the hold: not yet (probe 85f F2: it fired after five).
            { eval_time: "10m", alertname: "PalisadeWalHeld", exp_alerts: [] },
            {
              eval_time: "20m",
              alertname: "PalisadeWalHeld",
              exp_alerts: [
                { exp_labels: { severity: "ticket" }, exp_annotations: rule.annotations },
              ],
            },
          ],
        },
        {
          // Busy now and then under load, each time truncated soon after: no ticket.
          interval: "1m",
          input_series: checkpoints("0+1x30", "0+1x30"),
          alert_rule_test: [{ eval_time: "20m", alertname: "PalisadeWalHeld", exp_alerts: [] }],
        },
        {
          // Held for a few minutes, then truncated: resolved.
          interval: "1m",
          input_series: checkpoints("0+2x10 20x20", "0x10 1x20"),
          alert_rule_test: [{ eval_time: "25m", alertname: "PalisadeWalHeld", exp_alerts: [] }],
        },
      ],
    };
    await passesPromtoolTests(tests);
  });

  test("PalisadeCredentialGuessing fires on invalid tokens and keys from everywhere, not on expired or revoked ones (promtool test rules; probe 35a O2)", async () => {
    const rule = ALERT_RULES.find((each) => each.alert === "PalisadeCredentialGuessing")!;
    const failures = (reason: string, values: string) => ({
      series: `auth_failures_total{reason="${reason}"}`,
      values,
    });
    // 40 a minute, as Prometheus's humanize writes 0.667.
    const at = ruleCase(rule, "12m", ["{{ $value | humanize }}", "666.7m"]);
    const tests = {
      rule_files: [join(GRAFANA_DIR, "alerts.yml")],
      evaluation_interval: "1m",
      tests: [
        // 20 unknown API keys and 20 forged tokens a minute: 40, over 30.
        at([failures("invalid_api_key", "0+20x20"), failures("invalid_token", "0+20x20")], true),
        // 40 expired and revoked tokens a minute: clients' churn, no guess.
        at([failures("expired_token", "0+20x20"), failures("revoked_api_key", "0+20x20")], false),
        // 20 wrong metrics tokens a minute: under the threshold.
        at([failures("metrics_token", "0+20x20")], false),
      ],
    };
    await passesPromtoolTests(tests);
  });

  test("PalisadeErrorRatioHigh fires on 500s and 503s, also beside a flood of probes, scrapes and refusals, and 501 NOT_CONFIGURED alone does not fire it (promtool test rules; probes 43c F1, 89a F2)", async () => {
    const rule = ALERT_RULES.find((each) => each.alert === "PalisadeErrorRatioHigh")!;
    // Half the responses have `status`, the other half are 200s: 25 of each a minute.
    const half = (status: string, route: string) => [
      { series: `http_requests_total{route="${route}",status="${status}"}`, values: "0+25x20" },
      { series: 'http_requests_total{route="/api/auth/csrf",status="200"}', values: "0+25x20" },
    ];
    const at = ruleCase(rule, "15m", ["{{ $value | humanizePercentage }}", "50%"]);
    // The same, with a flood of what anyone can send without bound beside it: 2,000 a minute
    // each of probes, scrapes, 429s, 403s of a blocked address and 404s (probe 89a F2).
    const flooded = (status: string, route: string) => [
      ...half(status, route),
      ...[
        ["/health", "200"],
        ["/ready", "200"],
        ["/metrics", "200"],
        ["/api/auth/login", "429"],
        ["/api/chat", "403"],
        ["<unmatched>", "404"],
      ].map(([path, code]) => ({
        series: `http_requests_total{route="${path}",status="${code}"}`,
        values: "0+2000x20",
      })),
      // CORS preflights, answered before any limit (probe 89d F2).
      {
        series: 'http_requests_total{method="OPTIONS",route="<unmatched>",status="204"}',
        values: "0+2000x20",
      },
    ];
    // Every request served succeeds while probes and scrapes answer 503 (a disk nearly full):
    // no request failed, no page.
    const probesFailing = [
      { series: 'http_requests_total{route="/api/auth/csrf",status="200"}', values: "0+25x20" },
      { series: 'http_requests_total{route="/ready",status="503"}', values: "0+100x20" },
      { series: 'http_requests_total{route="/metrics",status="503"}', values: "0+4x20" },
    ];
    const tests = {
      rule_files: [join(GRAFANA_DIR, "alerts.yml")],
      evaluation_interval: "1m",
      tests: [
        // An unconfigured webhook asked for as often as the webhooks policy allows: no page.
        at(half("501", "/webhooks/stripe"), false),
        at(half("500", "/api/chat"), true),
        at(half("503", "/api/auth/login"), true),
        at(flooded("503", "/api/auth/login"), true),
        at(flooded("501", "/webhooks/stripe"), false),
        at(probesFailing, false),
      ],
    };
    await passesPromtoolTests(tests);
  });

  test("PalisadePaymentDisputeCreated fires on the first dispute after a start: on a series that starts at 0, and on one first seen at 1 from a process started minutes before (promtool test rules; probes 27c F1, 27d F1)", async () => {
    const rule = ALERT_RULES.find((each) => each.alert === "PalisadePaymentDisputeCreated")!;
    // One process (instance and job as a scrape labels them) started `startedAt` s into the test.
    const disputes = (values: string, startedAt = "-3600") => [
      {
        series:
          'audit_events_total{instance="a:3000",job="palisade",type="payment.dispute.created"}',
        values,
      },
      {
        series: 'process_start_time_seconds{instance="a:3000",job="palisade"}',
        values: `${startedAt}x30`,
      },
    ];
    const tests = {
      rule_files: [join(GRAFANA_DIR, "alerts.yml")],
      evaluation_interval: "1m",
      tests: [
        {
          interval: "1m",
          input_series: disputes("0x5 1x20"),
          alert_rule_test: [
            {
              eval_time: "8m",
              alertname: rule.alert,
              exp_alerts: [{ exp_labels: rule.labels, exp_annotations: rule.annotations }],
            },
          ],
        },
        {
          // A dispute before the first scrape of a process started a minute before: the first
          // sample is 1, which increase() cannot count; the process's start says it is new
          // (probe 27d F1).
          interval: "1m",
          input_series: disputes("_x5 1x20", "240"),
          alert_rule_test: [
            {
              eval_time: "8m",
              alertname: rule.alert,
              exp_alerts: [{ exp_labels: rule.labels, exp_annotations: rule.annotations }],
            },
          ],
        },
        {
          // A series that appears at 1 on a process running for an hour: no dispute now.
          interval: "1m",
          input_series: disputes("_x5 1x20"),
          alert_rule_test: [{ eval_time: "8m", alertname: rule.alert, exp_alerts: [] }],
        },
        {
          // Ten minutes after its start the process's old disputes page no one.
          interval: "1m",
          input_series: disputes("_x5 1x20", "240"),
          alert_rule_test: [{ eval_time: "16m", alertname: rule.alert, exp_alerts: [] }],
        },
      ],
    };
    await passesPromtoolTests(tests);
  });

  test("check config accepts the shipped prometheus.yml with this machine's paths", async () => {
    const dir = tempDir();
    try {
      const path = localPrometheusConfig(dir.path, {
        target: "127.0.0.1:9",
        token: "t",
        intervalSeconds: 15,
        alerting: true,
      });
      const result = await check("promtool", ["check", "config", path]);
      expect(result.stdout + result.stderr).toContain("SUCCESS");
      expect(result.code).toBe(0);
    } finally {
      dir.remove();
    }
  });

  test("check rules fails on a broken rule (the check can fail)", async () => {
    const dir = tempDir();
    try {
      const broken = read("alerts.yml").replace("sum(rate(", "sum(rate((");
      await Bun.write(join(dir.path, "alerts.yml"), broken);
      const result = await check("promtool", ["check", "rules", join(dir.path, "alerts.yml")]);
      expect(result.code).not.toBe(0);
    } finally {
      dir.remove();
    }
  });
});

describe.skipIf(!amtoolAvailable)("amtool", () => {
  test("check-config accepts grafana/alertmanager.yml", async () => {
    const result = await check("amtool", ["check-config", join(GRAFANA_DIR, "alertmanager.yml")]);
    expect(result.stdout).toContain("SUCCESS");
    expect(result.code).toBe(0);
  });
});
