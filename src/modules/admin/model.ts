import { t } from "elysia";
import { MAX_BLOCK_REASON_LENGTH } from "../../plugins/ip-block/service";
import { JsonInteger } from "../../plugins/openapi/json-integer";
import { Nullable } from "../../plugins/openapi/types";
import { MAX_KEY_NAME_LENGTH, MAX_ROTATION_GRACE_MS } from "../auth/api-keys";
import { ScopeSchema } from "../auth/model";

/** The longest life a key is given, and the longest block: the API's bounds, and the CLI's. */
export const MAX_KEY_DAYS = 3650;
export const MAX_BLOCK_MINUTES = 365 * 24 * 60;

export const NewKeyBody = t.Object({
  name: t.String({ minLength: 1, maxLength: MAX_KEY_NAME_LENGTH }),
  scopes: t.Array(ScopeSchema, { minItems: 1, uniqueItems: true }),
  expiresInDays: t.Optional(JsonInteger({ minimum: 1, maximum: MAX_KEY_DAYS })),
  environment: t.Optional(t.UnionEnum(["live", "test"])),
});

export const RotateBody = t.Object({
  graceMinutes: t.Optional(
    JsonInteger({
      minimum: 0,
      maximum: MAX_ROTATION_GRACE_MS / 60_000,
      description: "How long the old key keeps working; 60 by default",
    }),
  ),
});

export const ApiKeyView = t.Object({
  id: t.String(),
  name: t.String(),
  prefix: t.String(),
  scopes: t.Array(ScopeSchema),
  // Null where the file holds no time there (text, a fraction, out of range): a row written into
  // the file, not by Palisade, also marked `tampered` where its seal covers the column.
  createdAt: Nullable(t.Number()),
  expiresAt: Nullable(t.Number()),
  lastUsedAt: Nullable(t.Number()),
  revokedAt: Nullable(t.Number()),
  replacedBy: Nullable(
    t.String({
      description:
        "The key a rotation replaced this one with; null also when its rotation mark fails its seal (rotationTampered)",
    }),
  ),
  origin: Nullable(
    t.UnionEnum(["api", "bootstrap"], {
      description:
        "bootstrap: from API_KEYS, reconciled with it at every start; null: the file holds another value (written there, not by Palisade)",
    }),
  ),
  owner: Nullable(
    t.Object(
      { id: t.String(), email: t.String() },
      {
        description:
          "The user the key acts for; its scopes are bounded by that user's role. Null: an operator key",
      },
    ),
  ),
  tampered: t.Boolean({
    description:
      "True: the key's row, or its owner's account, does not match its seal (it was written into the database file, not by Palisade); the key is refused",
  }),
  rotationTampered: t.Boolean({
    description:
      "True: the key's rotation mark (replacedBy and its seal) does not match its seal (a replaced_by written, cleared or copied in the database file): whether it was rotated cannot be told, and it cannot be rotated",
  }),
  lineageTampered: t.Boolean({
    description:
      "True: the key's lineage (the rotation chain whose payments a key acting for no user holds) does not match its seal (it was written into the database file); the key is refused on the payment routes if it acts for no user, and cannot be rotated; its other scopes work",
  }),
});

export const CreatedKey = t.Object({
  key: t.String({ description: "Shown once; only its hash is kept" }),
  apiKey: ApiKeyView,
});

export const IdParams = t.Object({ id: t.String({ minLength: 1, maxLength: 64 }) });

/** What the strict-query rule takes of a date-time (calendar.ts), narrower than the format. */
const INSTANT =
  "An RFC 3339 instant: upper-case T and Z or an offset, hours 00–23, no leap second, up to nine fraction digits, on a day that exists";

export const AuditQuery = t.Object({
  type: t.Optional(
    t.String({
      maxLength: 100,
      description:
        "An audit event type, as the README's Audit log lists them (e.g. auth.login.failed); any other is 422",
    }),
  ),
  actor: t.Optional(t.String({ maxLength: 200 })),
  ip: t.Optional(
    t.String({
      maxLength: 64,
      description: "An IPv4 or IPv6 address: its rows, and those of its blocks' /64 and /48",
    }),
  ),
  since: t.Optional(t.String({ format: "date-time", description: INSTANT })),
  until: t.Optional(t.String({ format: "date-time", description: INSTANT })),
  // Any id a row may have: SQLite hands out ids from 1, but a row written into the file at 0 or
  // below is still listed (as tampered), and the cursor past it must be one the route takes
  // (probe 91b F4).
  cursor: t.Optional(
    t.Integer({ minimum: Number.MIN_SAFE_INTEGER, maximum: Number.MAX_SAFE_INTEGER }),
  ),
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 500 })),
});

export const AuditEventView = t.Object({
  id: t.Number(),
  at: t.String(),
  type: t.String(),
  actor: Nullable(t.String()),
  ip: Nullable(t.String()),
  route: Nullable(t.String()),
  requestId: Nullable(t.String()),
  outcome: t.String(),
  detail: t.Record(t.String(), t.Any()),
  tampered: t.Boolean({
    description:
      "The row is not as Palisade wrote or erased it (its hash under this file's audit key does not match what it holds): written or changed in the database file. `bun run cli audit:verify` says where the chain breaks",
  }),
});

export const AuditPage = t.Object({
  events: t.Array(AuditEventView),
  nextCursor: Nullable(t.Number()),
});

export const NewBlockBody = t.Object({
  address: t.String({
    minLength: 2,
    maxLength: 64,
    description:
      "An IPv4 or IPv6 address (IPv6 blocks cover its /64), or an IPv6 /48 written as one (2001:db8:6::/48), which blocks all of it",
  }),
  ttlMinutes: JsonInteger({ minimum: 1, maximum: MAX_BLOCK_MINUTES }),
  reason: t.String({ minLength: 1, maxLength: MAX_BLOCK_REASON_LENGTH }),
});

export const BlockView = t.Object({
  id: t.Number(),
  address: t.String(),
  reason: t.String(),
  source: t.UnionEnum(["auto", "admin"]),
  createdBy: Nullable(t.String()),
  createdAt: t.Number(),
  expiresAt: t.Number(),
});

/** Admin lists page at this many items unless `limit` says otherwise. */
export const ADMIN_PAGE = 100;

/** `cursor` and `limit` of a list that pages newest first (api-keys, blocks). */
export const PageQuery = t.Object({
  cursor: t.Optional(
    t.String({ maxLength: 200, description: "`nextCursor` of the previous page" }),
  ),
  limit: t.Optional(
    t.Integer({ minimum: 1, maximum: 500, description: `${ADMIN_PAGE} by default` }),
  ),
});

const NextCursor = Nullable(
  t.String({ description: "Pass as `cursor` for the next page; null on the last page" }),
);

export const ApiKeyList = t.Object({ keys: t.Array(ApiKeyView), nextCursor: NextCursor });

export const BlockList = t.Object({ blocks: t.Array(BlockView), nextCursor: NextCursor });

export const SecuritySummaryQuery = t.Object({
  since: t.Optional(
    t.String({
      maxLength: 40,
      description:
        "How far back: a duration (90m, 12h, 7d) or an ISO 8601 date-time with an offset; 24h by default, 30 days at most",
    }),
  ),
  limit: t.Optional(
    t.Integer({ minimum: 1, maximum: 100, description: "Entries per list; 10 by default" }),
  ),
});

const CategorySummary = t.Object({
  total: JsonInteger({ description: "Every such event in the window" }),
  addresses: t.Array(t.Object({ address: t.String(), count: JsonInteger() }), {
    description: "Client addresses, highest count first",
  }),
  principals: t.Array(t.Object({ principal: t.String(), count: JsonInteger() }), {
    description: "Principals (user:<id>, key:<id>), highest count first",
  }),
});

export const SecuritySummaryView = t.Object({
  since: t.String(),
  until: t.String(),
  tampered: JsonInteger({
    description:
      "Events of the window that do not match their hash (written into the database file): left out of every count",
  }),
  failedLogins: CategorySummary,
  rateLimitRefusals: CategorySummary,
  signatureFailures: CategorySummary,
});
