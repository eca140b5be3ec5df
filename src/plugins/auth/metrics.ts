import { METRIC } from "../metrics/names";
import { Counter, everyCombination, type Registry, startAtZero } from "../metrics/prom";

export const AUTH_FAILURE_REASONS = [
  "missing_credentials",
  "invalid_token",
  "expired_token",
  "revoked_token",
  "invalid_api_key",
  "expired_api_key",
  "revoked_api_key",
  "forbidden",
  "bad_password",
  "locked",
  "invalid_refresh",
  "refresh_reused",
  "metrics_token",
] as const;

export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

export function createAuthMetrics(registry: Registry) {
  const failures = new Counter({
    name: METRIC.authFailures,
    help: "Requests refused for their credentials or permissions, by reason",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  startAtZero(failures, everyCombination({ reason: AUTH_FAILURE_REASONS }));
  const passwordWorkRefused = new Counter({
    name: METRIC.authPasswordWorkRefused,
    help: "Sign-ins and registrations refused 503 because the password-hashing queue was full",
    registers: [registry],
  });
  return {
    fail(reason: AuthFailureReason) {
      failures.labels(reason).inc();
    },
    passwordWorkRefused() {
      passwordWorkRefused.inc();
    },
  };
}

export type AuthMetrics = ReturnType<typeof createAuthMetrics>;
