/**
 * Every series an alert rule or a dashboard panel pins by label value is exported at 0 from the
 * start, before its first event: Prometheus's increase() cannot count a series' step from absent
 * to its first value, so the first dispute after a start paged no one and a first burst of forged
 * webhook signatures stayed under its threshold (probe 27c F1).
 */
import { afterEach, expect, test } from "bun:test";
import { ALERT_RULES } from "../../grafana/src/alerts";
import { dashboardQueries } from "../../grafana/src/dashboards";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** `name{label="a"}` and `name{label=~"a|b"}` in an expression: each (name, label, value). */
function pinnedSeries(expression: string): { name: string; label: string; value: string }[] {
  const found: { name: string; label: string; value: string }[] = [];
  for (const [, name, matchers] of expression.matchAll(/([a-z_]+)\{([^}]*)\}/g)) {
    for (const [, label, operator, values] of matchers!.matchAll(/(\w+)\s*(=~|=)\s*"([^"]*)"/g)) {
      // A regular expression that is a plain list of values names each; any other is no pin.
      if (operator === "=~" && !/^[\w.|]+$/.test(values!)) continue;
      for (const value of values!.split("|")) found.push({ name: name!, label: label!, value });
    }
  }
  return found;
}

const exported = (metrics: string, name: string, label: string, value: string) =>
  new RegExp(
    `^${name}\\{(?:[^}]*,)?${label}="${value.replace(/\./g, "\\.")}"(?:,[^}]*)?\\} 0$`,
    "m",
  ).test(metrics);

test("a fresh service exports, at 0, every labelled series an alert or a panel pins", async () => {
  current = buildTestApp({
    env: {
      STRIPE_SECRET_KEY: "sk_test_0123456789abcdefghijklmnop",
      STRIPE_WEBHOOK_SECRET: "whsec_test_0123456789abcdefghijkl",
      WHATSAPP_APP_SECRET: "whatsapp-app-secret-0123456789",
      // The chat upstream's series exist once it is configured (never asked here).
      OPENAI_API_KEY: "sk-local-test-0123456789",
      OPENAI_BASE_URL: "http://127.0.0.1:9/v1",
    },
  });
  const metrics = await (await send(current, "/metrics")).text();
  const expressions = [
    ...ALERT_RULES.map((rule) => rule.expr),
    ...dashboardQueries().map((query) => query.expr),
  ];
  const pins = expressions.flatMap(pinnedSeries).filter(
    // Series of the request path (http_*) and of gauges exist from their first request or look.
    ({ name }) => name.endsWith("_total") && !name.startsWith("http_"),
  );
  expect(pins.length).toBeGreaterThan(10);
  const missing = pins.filter(({ name, label, value }) => !exported(metrics, name, label, value));
  expect(missing).toEqual([]);
  // The alert that sums by provider pins none: both providers start at 0 too.
  for (const provider of ["stripe", "whatsapp"]) {
    expect(metrics).toContain(`webhook_signature_failures_total{provider="${provider}"} 0`);
  }
  expect(metrics).toContain('audit_events_total{type="payment.dispute.created"} 0');
});
