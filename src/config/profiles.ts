/**
 * @module
 * Profile defaults. A profile changes what an unset variable means; an explicit variable always wins.
 * Production and staging are deployed profiles: secrets must be supplied and strong. Development
 * generates what is missing so `bun run start` works on a fresh clone.
 */

export const APP_ENVS = ["development", "staging", "production"] as const;
export type AppEnv = (typeof APP_ENVS)[number];

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface PasswordPolicy {
  minLength: number;
  maxLength: number;
  /** Minimum zxcvbn score (0–4). */
  minScore: number;
}

export interface BodyLimits {
  /** Bytes; the default for every route class not named below. */
  default: number;
  chat: number;
  /** `POST /api/payments/intents`. */
  payments: number;
  webhooks: number;
  /** Bun.serve's outer bound: no request body is read past this, whatever the route. */
  server: number;
}

export interface RouteLimits {
  login: number;
  register: number;
  refresh: number;
  privacy: number;
  metrics: number;
  chat: number;
  payments: number;
  webhooks: number;
}

export interface ProfileDefaults {
  logLevel: LogLevel;
  corsAllowedOrigins: string[];
  accessTokenExpireMinutes: number;
  refreshTokenExpireDays: number;
  rateLimitPerMinute: number;
  rateLimitBurst: number;
  /** Requests per minute for each route policy; `RATE_LIMIT_<POLICY>` overrides one. */
  routeLimits: RouteLimits;
  passwordPolicy: PasswordPolicy;
  bodyLimits: BodyLimits;
  /** Register answers a duplicate email like a new one, so accounts cannot be enumerated. */
  enumerationResistance: boolean;
  /** Strict-Transport-Security and `__Host-`/`Secure` cookies: only behind TLS. */
  requireTls: boolean;
  /** `GET /docs` renders the OpenAPI document; never in production. */
  docsPage: boolean;
  /** `GET /openapi.json` for anyone; production serves it to admins unless OPENAPI_PUBLIC=true. */
  openapiPublic: boolean;
  /** Missing secrets are generated for this run instead of refusing to start. */
  generateMissingSecrets: boolean;
  auditRetentionDays: number;
  chatRetentionDays: number;
  /** Tokens per principal per UTC day (0: no budget). */
  chatDailyTokenBudget: number;
  /** Chat turns one principal may have in flight at once, across processes (0: no limit). */
  chatConcurrentTurns: number;
}

const KIB = 1024;

const bodyLimits: BodyLimits = {
  default: 64 * KIB,
  /**
   * The longest spelling of a legal chat body, and the smallest whole KiB above it: a message of
   * 4000 code points each beyond the BMP written as two `\uXXXX` escapes (12 bytes, as Python's
   * `json.dumps` writes one by default), its 22-character conversation id and both keys escaped
   * too, the JSON's punctuation and a BOM: 48,274 bytes (probe 43b F3: 32 KiB refused such a
   * message 413). test/modules/chat/chat.test.ts holds the figure to the message rules.
   */
  chat: 48 * KIB,
  /**
   * The longest spelling of a legal intent, likewise: 20 metadata keys of 40 characters and values
   * of 500, a 500-character description and a 320-character email, every character a `\uXXXX`
   * escape (6 bytes; the keys' names too), the largest amount, the punctuation and a BOM: 70,181
   * bytes (probe 87d F7: the default 64 KiB refused such an intent 413 where its UTF-8 took 22 KB).
   * test/modules/payments/validation.test.ts holds the figure to the intent's rules.
   */
  payments: 69 * KIB,
  webhooks: 256 * KIB,
  server: 1024 * KIB,
};

const deployed: ProfileDefaults = {
  logLevel: "info",
  corsAllowedOrigins: [],
  accessTokenExpireMinutes: 60,
  refreshTokenExpireDays: 30,
  rateLimitPerMinute: 60,
  rateLimitBurst: 20,
  routeLimits: {
    login: 5,
    register: 3,
    refresh: 10,
    privacy: 3,
    metrics: 60,
    chat: 20,
    payments: 10,
    webhooks: 30,
  },
  passwordPolicy: { minLength: 12, maxLength: 256, minScore: 3 },
  bodyLimits,
  enumerationResistance: true,
  requireTls: true,
  docsPage: false,
  openapiPublic: false,
  generateMissingSecrets: false,
  auditRetentionDays: 90,
  chatRetentionDays: 365,
  chatDailyTokenBudget: 200_000,
  chatConcurrentTurns: 4,
};

export const PROFILES: Record<AppEnv, ProfileDefaults> = {
  development: {
    ...deployed,
    logLevel: "debug",
    corsAllowedOrigins: ["http://localhost:3000", "http://127.0.0.1:3000"],
    passwordPolicy: { minLength: 8, maxLength: 256, minScore: 2 },
    enumerationResistance: false,
    requireTls: false,
    docsPage: true,
    openapiPublic: true,
    generateMissingSecrets: true,
    chatDailyTokenBudget: 0,
    chatConcurrentTurns: 0,
  },
  staging: { ...deployed, docsPage: true, openapiPublic: true },
  production: deployed,
};
