/**
 * @module
 * The rate-limit policies and the one table that says which routes they cover. Every limited
 * request is counted against the default policy; a route in the table is also counted against its
 * own. Each policy has a long window and a 10-second burst window layered on it.
 */
import type { Config } from "../../config";

export const BURST_WINDOW_MS = 10_000;
export const MINUTE_MS = 60_000;

export interface Policy {
  id: string;
  limit: number;
  windowMs: number;
  burstLimit: number;
  /**
   * When the store cannot answer: false lets the request through (a public route should not go
   * down with its limiter), true refuses it (a login must not become brute-forceable).
   */
  failClosed: boolean;
}

export interface PolicyTable {
  defaultPolicy: Policy;
  /** The extra policy for a method and path, if any. */
  routePolicy(method: string, path: string): Policy | null;
}

/** Paths that are never limited: probes must answer even when the limiter is saturated. */
export const UNLIMITED_PATHS = new Set(["/health", "/ready", "/metrics"]);

export function buildPolicyTable(rateLimit: Config["rateLimit"]): PolicyTable {
  const burst = rateLimit.burst;
  const policy = (id: string, limit: number, failClosed = false): Policy => ({
    id,
    limit,
    windowMs: MINUTE_MS,
    burstLimit: Math.min(burst, limit),
    failClosed,
  });
  const defaultPolicy = policy("default", rateLimit.perMinute);
  const login = policy("login", 5, true);
  const register = policy("register", 3, true);
  const refresh = policy("refresh", 10, true);
  const chat = policy("chat", 20);
  const payments = policy("payments", 10, true);
  const webhooks = policy("webhooks", 30);
  const privacy = policy("privacy", 3, true);

  const exact = new Map<string, Policy>([
    ["POST /api/auth/login", login],
    ["POST /api/auth/register", register],
    ["POST /api/auth/refresh", refresh],
    ["POST /api/chat", chat],
    ["POST /api/payments/intents", payments],
    ["GET /api/me/export", privacy],
    ["DELETE /api/me", privacy],
  ]);
  return {
    defaultPolicy,
    routePolicy(method, path) {
      const found = exact.get(`${method} ${path}`);
      if (found) return found;
      if (path.startsWith("/webhooks/")) return webhooks;
      return null;
    },
  };
}
