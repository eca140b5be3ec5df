import type { Config } from "../../config";
import { dotenvProfileSettings } from "../../config/dotenv-profile";
import { looseSecretFileMessage } from "../../config/secret-file-modes";
import { loadFaq } from "../../modules/chat/providers/faq";
import type { Command } from "../command";
import { terminalJson } from "../terminal";

/** The effective configuration with every secret shown only as set or not set. */
export function describeConfig(config: Readonly<Config>): Record<string, unknown> {
  const secret = (value: string | null) => (value ? "(set)" : "(not set)");
  return {
    appEnv: config.appEnv,
    listen: `${config.host}:${config.port}`,
    databasePath: config.databasePath,
    logLevel: config.logLevel,
    trustProxy: config.trustProxy,
    corsAllowedOrigins: config.cors.allowedOrigins,
    rateLimit: config.rateLimit,
    accessTokenExpireMinutes: config.jwt.accessTokenExpireMinutes,
    refreshTokenExpireDays: config.jwt.refreshTokenExpireDays,
    jwtSecretKey: config.generatedSecrets.includes("JWT_SECRET_KEY") ? "(generated)" : "(set)",
    csrfSecretKey: config.generatedSecrets.includes("CSRF_SECRET_KEY") ? "(generated)" : "(set)",
    auditSecretKey: config.audit.developmentKeyFile
      ? config.audit.developmentKeyOnDisk
        ? `(development key file ${config.audit.developmentKeyFile})`
        : `(development key file ${config.audit.developmentKeyFile}, not there yet: the first start makes it)`
      : config.generatedSecrets.includes("AUDIT_SECRET_KEY")
        ? "(generated)"
        : "(set)",
    redis: secret(config.redisUrl),
    chatProvider: config.openai.apiKey ? `openai (${config.openai.model})` : "offline",
    stripe: secret(config.stripe.secretKey),
    whatsapp: secret(config.whatsapp.appSecret),
    sentry: secret(config.sentryDsn),
    metricsToken: secret(config.metricsToken),
    apiKeys: config.apiKeys.length,
  };
}

export const configCheck: Command = {
  name: "config:check",
  database: "none",
  summary: "Validate the environment and print the effective configuration (secrets masked)",
  usage: "config:check",
  run(_args, context) {
    const config = context.config();
    // The offline provider's FAQ is checked as the start checks it (a ConfigError, exit 2).
    if (!config.openai.apiKey) loadFaq(config.chat.faqPath);
    for (const { name, suggestion } of config.unknownVariables) {
      context.err(`warning: unknown variable ${name}: did you mean ${suggestion}?`);
    }
    for (const loose of config.looseSecretFiles) {
      context.err(`warning: ${looseSecretFileMessage(loose)}`);
    }
    // The executable reads the same environment as production (probe 71a F4): an "ok" here for
    // the development profile said nothing of what `dist/palisade` would refuse.
    if (config.appEnvDefaulted) {
      context.err(
        "warning: APP_ENV is not set: checked as the development profile `bun run start` serves; the executable (dist/palisade, the Docker image) starts as production: set APP_ENV=production to check what it needs",
      );
    }
    // `bun run cli` read these into the environment it checked; the executable reads none of them
    // (probe 71d F4).
    for (const { file, variable } of dotenvProfileSettings(process.cwd())) {
      context.err(
        `warning: ${file} sets ${variable}: \`bun run\` reads it, the executable (dist/palisade, the Docker image) does not and starts as production without it: give the executable ${variable} in its environment`,
      );
    }
    for (const line of terminalJson(describeConfig(config), 2).split("\n")) {
      context.out(line);
    }
    return 0;
  },
};
