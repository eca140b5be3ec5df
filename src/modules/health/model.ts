import { t } from "elysia";

export const HealthResponse = t.Object({ status: t.Literal("ok") });

export const DependencyState = t.Object({
  status: t.Union([t.Literal("up"), t.Literal("down"), t.Literal("not_configured")], {
    description: "not_configured: an optional part (payments) is switched off; /ready still passes",
  }),
  latencyMs: t.Number(),
  error: t.Optional(t.String()),
});

export const ReadyResponse = t.Object({
  status: t.Union([t.Literal("ready"), t.Literal("unavailable")]),
  checks: t.Record(t.String(), DependencyState),
});

export type DependencyState = typeof DependencyState.static;
export type ReadyResponse = typeof ReadyResponse.static;
