/**
 * @module
 * The Prometheus alerting rules (`grafana/alerts.yml`), from the metric names in names.ts like the
 * dashboards. Each rule has a `summary`, a `description` and a `runbook` annotation naming its
 * runbook line in the README (section "Alerts"). `bun run dashboards` writes the file; a test fails
 * when the committed file differs, `promtool check rules` checks it, and the Prometheus proof test
 * checks that every metric selector of every rule returns series from a real scrape.
 *
 * Severities: `page` (someone should look now: money, an outage, an attack in progress) and
 * `ticket` (look today). Alertmanager (grafana/alertmanager.yml) mails both to ALERT_EMAIL.
 */
import { TAMPER_EVENT_TYPES } from "../../src/plugins/audit/events";
import { METRIC, PROCESS_METRIC } from "../../src/plugins/metrics/names";

export interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: { severity: "page" | "ticket" };
  annotations: { summary: string; description: string; runbook: string };
}

const runbook = (alert: string) => `README.md, section Alerts: ${alert}`;

const rule = (
  alert: string,
  expr: string,
  duration: string,
  severity: "page" | "ticket",
  summary: string,
  description: string,
): AlertRule => ({
  alert,
  expr,
  for: duration,
  labels: { severity },
  annotations: { summary, description, runbook: runbook(alert) },
});

const r = METRIC;

/**
 * A counter's whole value for a process started in the last 10 minutes. The service exports its
 * counters at 0 from the start, but an event that reaches a process before Prometheus's first
 * scrape of it (a new instance takes traffic at once) makes the first sample 1, and increase()
 * cannot count a series' first step (probe 27d F1): for rules that page on the first events, this
 * counts them.
 */
const sinceRecentStart = (selector: string, by = "") =>
  `sum${by} (${selector} and on (instance, job) (time() - ${PROCESS_METRIC.startTime} < 600))`;
/**
 * The responses that are the service's failures: every 5xx but 501 NOT_CONFIGURED, the answer of
 * a feature the deployment left off, which anyone may ask for as often as its route's limit allows
 * (probe 43c F1: unconfigured webhooks paged the on-call). A label matcher list for `{…}`.
 */
export const SERVER_ERRORS = 'status=~"5..",status!="501"';
/**
 * Neither a probe nor a scrape nor a CORS preflight: anyone can send those without bound (a
 * preflight is answered 204 before any limit: probe 89d F2), and `/ready` and `/metrics` answer
 * 503 for states that are not failures of a request (a disk nearly full, a lock held).
 */
export const NOT_PROBES = 'method!="OPTIONS",route!~"/health|/ready|/metrics"';
/**
 * The requests the service set out to serve, which the 5xx are a share of: not a refusal (any
 * 4xx: a block, a rate limit, a bad credential or body, no such route) and not a probe or scrape,
 * each of which anyone can send without bound — one address sending `GET /health` or past its
 * limit kept 5xx under 5 % of all answers while every real request failed (probe 89a F2).
 */
export const SERVED_REQUESTS = `status!~"4..",${NOT_PROBES}`;
/** The tampering events other than a credential's (which has its own alert), as a label regex. */
const FILE_TAMPERING = TAMPER_EVENT_TYPES.filter(
  (type) => type !== "auth.credential_tampered",
).join("|");

export const ALERT_RULES: readonly AlertRule[] = [
  rule(
    "PalisadeLoginBruteForce",
    `sum(rate(${r.authFailures}{reason=~"bad_password|locked"}[5m])) > 0.5`,
    "2m",
    "page",
    "Brute-force login wave: {{ $value | humanize }} failed logins per second",
    "More than 30 failed or locked logins a minute for 2 minutes, across every address. Automatic IP blocks catch single addresses; a wave from many addresses is credential stuffing.",
  ),
  rule(
    "PalisadeCredentialGuessing",
    // Credentials that are no credential: not expired or revoked ones, nor refresh tokens (a
    // missing or expired one counts the same), which clients' own churn sends (probe 35a O2:
    // guessing tokens and keys from many addresses paged no one).
    `sum(rate(${r.authFailures}{reason=~"invalid_token|invalid_api_key|metrics_token"}[5m])) > 0.5`,
    "5m",
    "ticket",
    "Credential guessing: {{ $value | humanize }} invalid tokens or keys per second",
    "More than 30 requests a minute for 5 minutes carried an access token, API key or metrics token that is not one (malformed, forged, unknown), across every address. Invalid tokens and keys are not blocked by address: the access log's 401s say who sends them, most often a client or Prometheus configured with a wrong credential, else a distributed attempt.",
  ),
  rule(
    "PalisadeRateLimitSpike",
    `sum(rate(${r.rateLimitRejections}[5m])) > 1`,
    "5m",
    "ticket",
    "Rate-limit rejections spiking: {{ $value | humanize }} per second",
    "More than 60 requests a minute refused 429 RATE_LIMITED for 5 minutes: a scraper, an abusive client, or a limit set too low for real traffic.",
  ),
  rule(
    "PalisadeWebhookSignatureFailures",
    `sum by (provider) (increase(${r.webhookSignatureFailures}[10m])) > 5 or ${sinceRecentStart(r.webhookSignatureFailures, " by (provider)")} > 5`,
    "0m",
    "page",
    "{{ $labels.provider }} webhook signature failures: {{ $value | humanize }} in 10 minutes",
    "Webhook deliveries are being refused BAD_SIGNATURE (Stripe 400, WhatsApp 401): the signing secret was rotated on one side only, or someone is forging events.",
  ),
  rule(
    "PalisadePaymentDisputeCreated",
    `sum(increase(${r.auditEvents}{type="payment.dispute.created"}[10m])) > 0 or ${sinceRecentStart(`${r.auditEvents}{type="payment.dispute.created"}`)} > 0`,
    "0m",
    "page",
    "A payment dispute was opened",
    "Stripe reported a dispute (chargeback). It has a deadline for evidence; the audit log names the payment.",
  ),
  rule(
    "PalisadeCredentialTampered",
    // Recorded by the scraped process (the counter), or by any process on the file in the last
    // hour (the gauge: a CLI command, an instance Prometheus does not scrape).
    `(sum(increase(${r.auditEvents}{type="auth.credential_tampered"}[10m])) > 0) or (max(${r.auditTamperEventsRecent}{type="auth.credential_tampered"}) > 0)`,
    "0m",
    "page",
    "A credential row in the database does not match its seal",
    "An account, API key or refresh token was written into the database file rather than by Palisade (or AUDIT_SECRET_KEY changed). The row is refused; whoever could write the file is the incident. Recorded by any process on the file, a CLI command too; resolves an hour after the last such event.",
  ),
  rule(
    "PalisadeDatabaseTampered",
    `(sum(increase(${r.auditEvents}{type=~"${FILE_TAMPERING}"}[10m])) > 0) or (max(${r.auditTamperEventsRecent}{type=~"${FILE_TAMPERING}"}) > 0)`,
    "0m",
    "page",
    "Something was written into the database file, not by Palisade",
    "A WhatsApp outbox row that does not match its seal (not sent), a chat conversation or message that does not (neither continued nor shown), a payment or stored Idempotency-Key result that does not (treated as absent), an address block or lockout that does not (blocks nothing), a trigger (dropped), or a changed table (the service stopped) was written into the database file, or the file was put back into a shape from before a release's seals to have rows sealed (db.resealed). Whoever could write the file is the incident. Recorded by any process on the file, a CLI command such as db:migrate too; resolves an hour after the last such event.",
  ),
  rule(
    "PalisadeErrorRatioHigh",
    `(sum(rate(${r.httpRequests}{${SERVER_ERRORS},${NOT_PROBES}}[5m])) or vector(0)) / sum(rate(${r.httpRequests}{${SERVED_REQUESTS}}[5m])) > 0.05`,
    "5m",
    "page",
    "{{ $value | humanizePercentage }} of requests served are 5xx",
    "More than 5 % of the requests the service set out to serve have been answered with a server error for 5 minutes. A 501 NOT_CONFIGURED (a feature this deployment has not configured, such as payments or a webhook) is not one and is not counted; refusals (4xx), health probes, scrapes and CORS preflights are not counted among the requests served, since anyone can send those without bound, and a probe's or scrape's 503 (a disk nearly full, a lock held) is not counted as a server error of a request.",
  ),
  rule(
    "PalisadeLatencyP99High",
    // Not chat turns: each is timed to the end of its reply, the model's time to write it, and a
    // reply over a second is a normal one (probe 85f F1: it fired on every chatbot's traffic).
    `histogram_quantile(0.99, sum by (le) (rate(${r.httpRequestDuration}_bucket{route!="/api/chat"}[5m]))) > 1`,
    "10m",
    "ticket",
    "p99 latency is {{ $value | humanizeDuration }}",
    "The slowest 1 % of requests, chat turns aside (a turn lasts as long as the model writes), have taken more than a second for 10 minutes.",
  ),
  rule(
    "PalisadeUpstreamFailing",
    `sum by (provider) (rate(${r.upstreamAttemptFailures}{kind!="refused"}[5m])) / sum by (provider) (rate(${r.upstreamRequestDuration}_count[5m])) >= 0.5`,
    "5m",
    "page",
    "Half or more of the requests to {{ $labels.provider }} fail",
    "For 5 minutes half or more of the chat upstream's requests (each attempt) have failed (timed out, 5xx, unusable answers; not its refusals of a request), whether or not their callers waited for the retries: an outage even when clients give up before the circuit breaker could open.",
  ),
  rule(
    "PalisadeUpstreamRefusing",
    `sum by (provider) (rate(${r.upstreamAttemptFailures}{kind="refused"}[15m])) / sum by (provider) (rate(${r.upstreamRequestDuration}_count[15m])) >= 0.5`,
    "15m",
    "ticket",
    "Half or more of the requests to {{ $labels.provider }} are refused for their content",
    "For 15 minutes half or more of the chat upstream's requests have been refused for what they hold (its 400, 413 or 422, answered 422 UPSTREAM_REFUSED): one user's text does that now and then, but most requests refused is a setting the upstream does not take (CHAT_MAX_COMPLETION_TOKENS past the model's, a context too long for it, a model that takes no system prompt). Not paged: the 5xx alert does not see these.",
  ),
  rule(
    "PalisadeUpstreamCircuitOpen",
    `max by (provider) (${r.upstreamCircuitOpen}) == 1`,
    "1m",
    "page",
    "The {{ $labels.provider }} circuit breaker is open",
    "The chat upstream has been failing: chat answers 503 UPSTREAM_UNAVAILABLE until it recovers.",
  ),
  rule(
    "PalisadeOutboxBacklogGrowing",
    `max(${r.whatsappOutboxPending}) > 10 and max(deriv(${r.whatsappOutboxPending}[15m])) > 0`,
    "15m",
    "ticket",
    "WhatsApp outbox backlog growing: {{ $value }} replies pending",
    "More than 10 WhatsApp replies are waiting and the backlog has kept growing for 15 minutes: the Graph API is refusing or slow.",
  ),
  rule(
    "PalisadeWalHeld",
    // Each process tries at most every 30 s while the WAL is held (db/wal-guard): busy tries and no
    // truncation for 15 minutes running are a transaction that has held it that long, not traffic.
    // The condition holds from the first busy try, so the 15 minutes are its `for` (probe 85f F2:
    // with 5, it fired 5 minutes into a hold).
    `sum(increase(${r.dbWalTruncateCheckpoints}{outcome="busy"}[10m])) > 0 unless sum(increase(${r.dbWalTruncateCheckpoints}{outcome="truncated"}[10m])) > 0`,
    "15m",
    "ticket",
    "The WAL is past WAL_TRUNCATE_MB and cannot be truncated",
    "For 15 minutes every TRUNCATE checkpoint of the WAL has come back busy: another connection to the database file (an operator's sqlite3 shell, a slow tool) holds a long transaction, and the -wal file grows with every write until it ends (db_wal_size_bytes on the service dashboard).",
  ),
  rule(
    "PalisadeInstanceDown",
    `up{job="palisade"} == 0`,
    "1m",
    "page",
    "{{ $labels.instance }} is not answering scrapes",
    "Prometheus has failed to scrape this Palisade process for a minute: it is down, blocked, or refusing the metrics token.",
  ),
];

/** The rule file as committed. */
export function renderAlertRules(): string {
  const header = [
    "# Prometheus alerting rules for Palisade. Generated by `bun run dashboards` from",
    "# grafana/src/alerts.ts: edit that file, not this one (a test fails when they differ).",
    "# Runbooks: README.md, section Alerts.",
  ].join("\n");
  const body = Bun.YAML.stringify({ groups: [{ name: "palisade", rules: ALERT_RULES }] }, null, 2);
  return `${header}\n${body.endsWith("\n") ? body : `${body}\n`}`;
}
