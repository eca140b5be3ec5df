import { t } from "elysia";

export const ExportDocument = t.Object(
  {
    exportedAt: t.String(),
    profile: t.Object({
      id: t.String(),
      email: t.String(),
      role: t.String(),
      createdAt: t.Number(),
    }),
    sessions: t.Array(t.Record(t.String(), t.Any())),
    apiKeys: t.Array(t.Record(t.String(), t.Any())),
    auditEvents: t.Array(t.Record(t.String(), t.Any())),
  },
  { additionalProperties: true, description: "Everything Palisade holds about the caller" },
);
