/**
 * @module
 * `alerts:config`: Alertmanager's configuration, mailing every alert to ALERT_EMAIL through the
 * ALERT_SMTP_SMARTHOST relay. Alertmanager does not expand environment variables in its file, so
 * the values are written in here, from the same validated configuration as the service; the relay
 * password is not: Alertmanager reads it from a file (`smtp_auth_password_file`, a Docker secret in
 * compose.yaml), so the generated file holds no secret. `grafana/alertmanager.yml` is this
 * command's output for the example values (a test keeps the two in step).
 */
import { closeSync, openSync, readSync, statSync, writeFileSync } from "node:fs";
import type { AlertSettings } from "../../config/alerts";
import { ConfigError } from "../../config/error";
import { isLoopbackHost } from "../../config/parse";
import { CliError, type Command } from "../command";

/** Where compose.yaml mounts the relay password (the `smtp_password` secret). */
export const DEFAULT_SMTP_PASSWORD_FILE = "/run/secrets/smtp_password";

export interface AlertmanagerSettings {
  email: readonly string[];
  smarthost: string;
  from: string;
  username: string | null;
  /** Read by Alertmanager for SMTP authentication; only with a username. */
  passwordFile: string | null;
}

/** The settings `grafana/alertmanager.yml` is rendered with. */
export const EXAMPLE_ALERTMANAGER_SETTINGS: AlertmanagerSettings = {
  email: ["ops@example.com"],
  smarthost: "smtp.example.com:587",
  from: "palisade-alerts@example.com",
  username: "palisade-alerts@example.com",
  passwordFile: DEFAULT_SMTP_PASSWORD_FILE,
};

export function renderAlertmanagerConfig(settings: AlertmanagerSettings): string {
  const global: Record<string, string | boolean> = {
    smtp_smarthost: settings.smarthost,
    smtp_from: settings.from,
    // STARTTLS or nothing: alert mail names routes under attack and carries the relay login. A
    // relay on this host (a local Postfix on loopback) is reached without leaving it.
    smtp_require_tls: !isLoopbackHost(settings.smarthost.replace(/:\d+$/, "")),
  };
  if (settings.username !== null) {
    global.smtp_auth_username = settings.username;
    if (settings.passwordFile !== null) global.smtp_auth_password_file = settings.passwordFile;
  }
  const document = {
    global,
    route: {
      receiver: "email",
      group_by: ["alertname", "provider"],
      group_wait: "30s",
      group_interval: "5m",
      repeat_interval: "4h",
      // Pages (money, outage, attack in progress) repeat hourly until resolved; tickets every 4 h.
      routes: [{ matchers: ['severity="page"'], receiver: "email", repeat_interval: "1h" }],
    },
    receivers: [
      {
        name: "email",
        email_configs: [{ to: settings.email.join(", "), send_resolved: true }],
      },
    ],
  };
  const header = [
    "# Alertmanager for Palisade: every alert of grafana/alerts.yml is mailed to ALERT_EMAIL.",
    settings === EXAMPLE_ALERTMANAGER_SETTINGS
      ? "# Written by `bun run cli alerts:config` (see the README, Alerts); this copy holds example\n# values."
      : "# Written by `bun run cli alerts:config` (see the README, Alerts) from ALERT_EMAIL and\n# ALERT_SMTP_*.",
    "# The SMTP password is never in this file: Alertmanager reads it from the file named by",
    "# smtp_auth_password_file.",
  ].join("\n");
  return `${header}\n${Bun.YAML.stringify(document, null, 2).trimEnd()}\n`;
}

/** The configured settings, or a ConfigError naming the first variable missing. */
export function alertmanagerSettings(
  alerts: AlertSettings,
  passwordFile: string | null,
): AlertmanagerSettings {
  if (alerts.email.length === 0) {
    throw new ConfigError("ALERT_EMAIL", "is required: where should alerts be mailed?");
  }
  if (alerts.smtpSmarthost === null) {
    throw new ConfigError("ALERT_SMTP_SMARTHOST", "is required: the SMTP relay, host:port");
  }
  if (alerts.smtpFrom === null) {
    throw new ConfigError("ALERT_SMTP_FROM", "is required: the sender address of alert mail");
  }
  return {
    email: alerts.email,
    smarthost: alerts.smtpSmarthost,
    from: alerts.smtpFrom,
    username: alerts.smtpUsername,
    passwordFile: alerts.smtpUsername === null ? null : passwordFile,
  };
}

export const alertsConfig: Command = {
  name: "alerts:config",
  database: "none",
  summary:
    "Write Alertmanager's configuration from ALERT_EMAIL and ALERT_SMTP_* (stdout, or --out PATH); the relay password stays in --password-file (default /run/secrets/smtp_password)",
  usage: "alerts:config [--out PATH] [--password-file PATH]",
  run(args, context) {
    const passwordFile = args.flags["password-file"];
    const settings = alertmanagerSettings(
      context.config().alerts,
      typeof passwordFile === "string" ? passwordFile : DEFAULT_SMTP_PASSWORD_FILE,
    );
    const text = renderAlertmanagerConfig(settings);
    const out = args.flags.out;
    if (typeof out === "string") {
      refuseToOverwriteOther(out);
      writeFileSync(out, text, { mode: 0o644 });
      context.out(`wrote ${out}: alerts mailed to ${settings.email.join(", ")}`);
    } else {
      for (const line of text.trimEnd().split("\n")) context.out(line);
    }
    return 0;
  },
};

/** What every configuration this command writes begins with (renderAlertmanagerConfig). */
const WRITTEN_HEADER = "# Alertmanager for Palisade:";

/**
 * `--out` replaces a configuration this command wrote (run again after a change), never any other
 * file: a wrong path overwrote the live database with YAML, exit 0 (probe 86d F2).
 */
function refuseToOverwriteOther(path: string): void {
  let found: ReturnType<typeof statSync>;
  try {
    found = statSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  // Only a regular file is read: a FIFO would block the read, /dev/stdout is written as asked
  // (probe 86e F6), and a directory is the write's own error.
  if (!found.isFile()) return;
  const descriptor = openSync(path, "r");
  const start = Buffer.alloc(WRITTEN_HEADER.length);
  try {
    readSync(descriptor, start, 0, start.length, 0);
  } finally {
    closeSync(descriptor);
  }
  if (found.size > 0 && start.toString("utf8") !== WRITTEN_HEADER) {
    throw new CliError(
      "--out names a file this command did not write; remove it or choose another path",
    );
  }
}
