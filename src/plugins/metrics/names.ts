/**
 * @module
 * Every metric name in the public contract (`CONTRACT.md`), spelled once. Code that registers a
 * metric uses these constants, and the dashboards and alert rules import them, so a rename is one
 * edit here and a compile error everywhere else rather than a panel that silently shows nothing.
 */

export const METRIC = {
  /** Counter `{method, route, status}`: requests answered; `route` is the pattern. */
  httpRequests: "http_requests_total",
  /** Histogram `{method, route}`: time from receiving a request to sending its response. */
  httpRequestDuration: "http_request_duration_seconds",
  /** Gauge: requests received and not yet answered, in this process. */
  httpRequestsInFlight: "http_requests_in_flight",
  /** Counter `{policy}`: requests refused by the rate limiter. */
  rateLimitRejections: "rate_limit_rejections_total",
  /** Counter `{mode}`: limiter store failures (`open`: let through, `closed`: refused). */
  rateLimitStoreErrors: "rate_limit_store_errors_total",
  /** Gauge: client addresses blocked right now. */
  ipBlocksActive: "ip_blocks_active",
  /** Counter `{reason}`: requests refused for their credentials or permissions. */
  authFailures: "auth_failures_total",
  /** Counter: sign-ins and registrations refused because the password-hashing queue was full. */
  authPasswordWorkRefused: "auth_password_work_refused_total",
  /** Counter: state-changing browser requests refused by the CSRF check. */
  csrfFailures: "csrf_failures_total",
  /** Counter `{type}`: security events recorded in the audit log. */
  auditEvents: "audit_events_total",
  /** Gauge `{type}`: tampering events in the file's audit log from the last hour, any process's. */
  auditTamperEventsRecent: "audit_tamper_events_recent",
  /** Histogram `{operation}`: time one SQL statement took. */
  dbQueryDuration: "db_query_duration_seconds",
  /** Gauge: the database's `-wal` file, in bytes (read at each scrape; 0 when there is none). */
  dbWalSize: "db_wal_size_bytes",
  /** Counter `{outcome}`: the WAL guard's TRUNCATE checkpoints (`truncated`, `busy`). */
  dbWalTruncateCheckpoints: "db_wal_truncate_checkpoints_total",
  /** Counter `{provider}`: webhook deliveries whose signature did not verify. */
  webhookSignatureFailures: "webhook_signature_failures_total",
  /** Counter `{provider, outcome}`: verified webhook deliveries. */
  webhookEvents: "webhook_events_total",
  /** Counter `{kind}`: chat tokens (prompt, completion). */
  chatTokens: "chat_tokens_total",
  /** Counter `{provider, outcome}`: chat requests. */
  chatRequests: "chat_requests_total",
  /** Counter: chat turns whose budget reservations the maintenance gave back (process gone). */
  chatReservationsReclaimed: "chat_reservations_reclaimed_total",
  /** Histogram `{provider}`: time one upstream request took. */
  upstreamRequestDuration: "upstream_request_duration_seconds",
  /** Gauge `{provider}`: 1 while the upstream's circuit breaker is open. */
  upstreamCircuitOpen: "upstream_circuit_open",
  /** Counter `{provider, kind}`: upstream requests (attempts) that failed, whoever waited for them. */
  upstreamAttemptFailures: "upstream_attempt_failures_total",
  upstreamBusyTimeouts: "upstream_busy_timeouts_total",
  /** Counter `{reason}`: error reports Sentry refused or that did not reach it (SENTRY_DSN set). */
  errorReportsFailed: "error_reports_failed_total",
  /** Counter `{status}`: payments by status. */
  payments: "payments_total",
  /** Gauge: WhatsApp replies accepted and not yet sent or given up (the outbox backlog). */
  whatsappOutboxPending: "whatsapp_outbox_pending",
  /** Counter `{outcome}`: WhatsApp replies sent, given up, or refused for the sender's limit. */
  whatsappReplies: "whatsapp_replies_total",
  /** Counter `{status}`: WhatsApp status callbacks (sent, delivered, read, failed). */
  whatsappStatuses: "whatsapp_statuses_total",
} as const;

/**
 * prom-client's default process metrics the dashboards read (registry.ts collects them; they are
 * not in the contract list because the library, not Palisade, names them).
 */
export const PROCESS_METRIC = {
  /** Gauge: event-loop lag at the 99th percentile since the last scrape (prom-client's monitor). */
  eventLoopLagP99: "nodejs_eventloop_lag_p99_seconds",
  /** Gauge: mean event-loop lag. */
  eventLoopLagMean: "nodejs_eventloop_lag_mean_seconds",
  /** Gauge: resident set size. */
  residentMemory: "process_resident_memory_bytes",
  /** Gauge `{}`: JavaScript heap in use. */
  heapUsed: "nodejs_heap_size_used_bytes",
  /** Gauge: when the process started (Unix seconds); alerts read it to tell a new process. */
  startTime: "process_start_time_seconds",
} as const;

export type MetricName = (typeof METRIC)[keyof typeof METRIC];

/** Every contract metric name, for checks that walk them all (dashboards, the Prometheus proof). */
export const CONTRACT_METRIC_NAMES: readonly MetricName[] = Object.values(METRIC);
