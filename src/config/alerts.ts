/**
 * @module
 * Alertmanager's mail settings (`ALERT_EMAIL`, `ALERT_SMTP_*`). The service does not send mail:
 * `bun run cli alerts:config` writes them into an Alertmanager configuration, because
 * Alertmanager does not expand environment variables in its own file. Validated here with the
 * rest of the configuration so a typo is refused with one line naming the variable.
 */
import { ConfigError } from "./error";
import { parseInteger, parseList } from "./parse";

export interface AlertSettings {
  /** `ALERT_EMAIL`: where every alert is mailed (a comma list); empty when unset. */
  email: string[];
  /** `ALERT_SMTP_SMARTHOST`: the relay, `host:port`. */
  smtpSmarthost: string | null;
  /** `ALERT_SMTP_FROM`: the sender address. */
  smtpFrom: string | null;
  /** `ALERT_SMTP_USERNAME`: the relay login; unset: no SMTP authentication. */
  smtpUsername: string | null;
}

// Deliberately plain: an address Alertmanager can put in a header, no display names, no commas,
// no whitespace or angle brackets (which would let a value add headers or recipients).
const ADDRESS =
  /^[^\s@,<>"'()[\]\\;:]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$/;

export function parseAddress(name: string, raw: string): string {
  if (!ADDRESS.test(raw) || raw.length > 254) {
    throw new ConfigError(name, `has "${raw.slice(0, 80)}", which is not a plain email address`);
  }
  return raw;
}

export function parseSmarthost(name: string, raw: string): string {
  const match = /^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/.exec(raw);
  if (!match) throw new ConfigError(name, "must be host:port, e.g. smtp.example.com:587");
  parseInteger(name, match[2]!, 1, 65535);
  return raw;
}

export function parseAlertSettings(text: (name: string) => string | undefined): AlertSettings {
  const email = parseList(text("ALERT_EMAIL") ?? "").map((item) =>
    parseAddress("ALERT_EMAIL", item),
  );
  const smarthost = text("ALERT_SMTP_SMARTHOST");
  const from = text("ALERT_SMTP_FROM");
  const username = text("ALERT_SMTP_USERNAME");
  if (username !== undefined && !/^[\x21-\x7e]{1,200}$/.test(username)) {
    throw new ConfigError(
      "ALERT_SMTP_USERNAME",
      "must be 1 to 200 printable characters without spaces",
    );
  }
  return {
    email,
    smtpSmarthost:
      smarthost === undefined ? null : parseSmarthost("ALERT_SMTP_SMARTHOST", smarthost),
    smtpFrom: from === undefined ? null : parseAddress("ALERT_SMTP_FROM", from),
    smtpUsername: username ?? null,
  };
}
