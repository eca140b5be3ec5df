/**
 * @module
 * Every environment variable Palisade reads, in one list. `.env.example` documents exactly these
 * (a test holds the two together), and every secret is also accepted as `NAME_FILE`.
 */

export interface VariableSpec {
  name: string;
  /** Secrets may come from `NAME_FILE` and are redacted wherever they could be printed. */
  secret: boolean;
  description: string;
}

const v = (name: string, description: string, secret = false): VariableSpec => ({
  name,
  secret,
  description,
});

export const VARIABLES: readonly VariableSpec[] = [
  v("APP_ENV", "development, staging or production (ENVIRONMENT is accepted too)"),
  v("HOST", "address to listen on"),
  v("PORT", "port to listen on"),
  v("DATABASE_PATH", "SQLite file"),
  v("LOG_LEVEL", "fatal, error, warn, info, debug, trace or silent (any case; WARNING, CRITICAL)"),
  v("TRUST_PROXY", "trusted proxy hops (a number) or a comma list of CIDRs"),
  v("ALLOWED_HOSTS", "comma list of host names the Host header may name; required in production"),
  v("JWT_SECRET_KEY", "HMAC key for access tokens, at least 32 bytes", true),
  v(
    "JWT_PREVIOUS_SECRET_KEY",
    "the key being rotated out: its tokens stay valid until they expire",
    true,
  ),
  v("ACCESS_TOKEN_EXPIRE_MINUTES", "access token lifetime"),
  v("REFRESH_TOKEN_EXPIRE_DAYS", "refresh token lifetime"),
  v("CSRF_SECRET_KEY", "HMAC key for CSRF tokens, at least 32 bytes", true),
  v(
    "CSRF_PREVIOUS_SECRET_KEY",
    "the CSRF key being rotated out: its tokens stay valid until they expire",
    true,
  ),
  v(
    "AUDIT_SECRET_KEY",
    "HMAC key for the audit chain, erasure pseudonyms and credential seals, at least 32 bytes; never rotate it",
    true,
  ),
  v("CORS_ALLOWED_ORIGINS", "comma list of origins allowed to call the API from a browser"),
  v("RATE_LIMIT_PER_MINUTE", "default requests per minute per principal"),
  v("RATE_LIMIT_BURST", "requests per 10 seconds per principal"),
  v("RATE_LIMIT_LOGIN", "sign-ins per minute per address (and per account)"),
  v("RATE_LIMIT_REGISTER", "registrations per minute per address"),
  v("RATE_LIMIT_REFRESH", "token refreshes per minute per address"),
  v("RATE_LIMIT_PRIVACY", "exports and erasures per minute per user"),
  v("RATE_LIMIT_METRICS", "GET /metrics per minute per address"),
  v("RATE_LIMIT_CHAT", "chat requests per minute per principal"),
  v("RATE_LIMIT_PAYMENTS", "payment intents per minute per principal"),
  v("RATE_LIMIT_WEBHOOKS", "webhook deliveries per minute per address"),
  v("RATE_LIMIT_WHATSAPP_SENDER", "WhatsApp messages per minute per sender that get a reply"),
  v("RATE_LIMIT_ALLOW_CIDRS", "comma list of CIDRs that are never rate limited"),
  v(
    "IP_BLOCK_RATE_LIMIT_REFUSALS",
    "rate-limit refusals in 10 minutes that block an address (0: never)",
  ),
  v("IP_BLOCK_FAILED_LOGINS", "failed logins in 15 minutes that block an address (0: never)"),
  v(
    "IP_BLOCK_IPV6_SITE_BLOCKS",
    "distinct /64s of one IPv6 /48 blocked automatically in an hour that block it whole (0: never)",
  ),
  v("REDIS_URL", "shared rate-limiter store for several VMs", true),
  v("OPENAI_API_KEY", "key for the OpenAI-compatible chat provider", true),
  v("OPENAI_BASE_URL", "base URL of the OpenAI-compatible API"),
  v("OPENAI_MODEL", "chat model name"),
  v("OPENAI_TIMEOUT_MS", "timeout of one upstream chat request, in milliseconds"),
  v("CHAT_SYSTEM_PROMPT", "the system prompt sent first in every upstream chat request"),
  v("CHAT_FAQ_PATH", "the offline provider's FAQ file (JSON); the shipped FAQ when unset"),
  v("CHAT_CONTEXT_MESSAGES", "earlier messages sent upstream as context, at most"),
  v("CHAT_CONTEXT_TOKENS", "estimated tokens of context sent upstream, at most"),
  v("CHAT_MAX_COMPLETION_TOKENS", "the most tokens one upstream reply may produce (its cap)"),
  v("CHAT_DAILY_TOKEN_BUDGET", "chat tokens per principal per UTC day (0: no budget)"),
  v(
    "CHAT_MAX_CONCURRENT_TURNS",
    "chat turns one principal may have in flight at once (0: no limit)",
  ),
  v("STRIPE_SECRET_KEY", "Stripe secret key", true),
  v("STRIPE_WEBHOOK_SECRET", "Stripe webhook signing secret (comma list during a roll)", true),
  v("STRIPE_API_URL", "a local Stripe-compatible server, for tests"),
  v("PAYMENT_MAX_AMOUNT", "largest payment intent, in minor units"),
  v("PAYMENT_CURRENCIES", "comma list of ISO 4217 currencies accepted"),
  v(
    "PAYMENT_DAILY_INTENTS",
    "new payment intents one account or key may make in 24 hours (0: no bound)",
  ),
  v("WHATSAPP_APP_SECRET", "Meta app secret for webhook signatures", true),
  v("WHATSAPP_APP_SECRET_PREVIOUS", "the app secret before a rotation, still accepted", true),
  v("WHATSAPP_VERIFY_TOKEN", "token Meta echoes when subscribing the webhook", true),
  v("WHATSAPP_ACCESS_TOKEN", "Graph API token for replies", true),
  v("WHATSAPP_API_URL", "Graph API base URL"),
  v("SENTRY_DSN", "report errors to Sentry when set", true),
  v("SENTRY_TRACES_SAMPLE_RATE", "share of requests traced in Sentry, 0 to 1 (default 0)"),
  v("APP_RELEASE", "the release reported to Sentry (default: palisade@<package version>)"),
  v("METRICS_TOKEN", "bearer token required on /metrics when set", true),
  v("METRICS_PORT", "serve /metrics on its own port (or the first free one of a range 9101-9104)"),
  v("METRICS_HOST", "address the METRICS_PORT listener binds (default 127.0.0.1)"),
  v("ALERT_EMAIL", "where Alertmanager mails alerts (comma list); see bun run cli alerts:config"),
  v("ALERT_SMTP_SMARTHOST", "the SMTP relay Alertmanager sends through, host:port"),
  v("ALERT_SMTP_FROM", "the sender address of alert mail"),
  v("ALERT_SMTP_USERNAME", "the SMTP relay login (its password: a file, see alerts:config)"),
  v("OPENAPI_PUBLIC", "true: /openapi.json is public in production too (default: admins only)"),
  v("AUDIT_RETENTION_DAYS", "days audit rows are kept"),
  v("WAL_TRUNCATE_MB", "a process truncates the WAL past this size (0: never; Litestream)"),
  v("CHAT_RETENTION_DAYS", "days chat messages are kept"),
  v("API_KEYS", "comma list of bootstrap API keys, stored only as hashes", true),
];

export const SECRET_VARIABLES: readonly string[] = VARIABLES.filter((s) => s.secret).map(
  (s) => s.name,
);
