/**
 * @module
 * `API_KEYS`: bootstrap API keys, a comma list of `key` or `key:scope+scope` (`chat+payments` when
 * no scopes are given). Every entry is checked here, so `config:check` refuses what the start would:
 * a scope that does not exist, a key the verifier could never accept (under 16 characters, spaces
 * around it or a character outside printable ASCII, a `pal_` key whose checksum is wrong or whose
 * shape is not whole), a key holding a
 * colon (a second one of `key:scope:scope`), a `pal_test_` key in production, and two entries that share
 * their lookup prefix (a key listed twice, or two `pal_` keys with the same first 16 characters:
 * keys are found by that prefix, so one of them could never work).
 * Messages name entries by position, never by value: the keys are secrets.
 */
import { API_KEY_SCOPES } from "../db/schema/auth";
import {
  hasValidChecksum,
  KEY_PATTERN,
  keyPrefix,
  PREFIX_LENGTH,
} from "../plugins/auth/api-key-format";
import { ConfigError } from "./error";
import { parseList } from "./parse";
import { secretWeakness } from "./secrets";

export type BootstrapScope = (typeof API_KEY_SCOPES)[number];

export interface BootstrapKey {
  key: string;
  scopes: BootstrapScope[];
}

export const DEFAULT_BOOTSTRAP_SCOPES: readonly BootstrapScope[] = ["chat", "payments"];

const isScope = (value: string): value is BootstrapScope =>
  (API_KEY_SCOPES as readonly string[]).includes(value);

export function parseApiKeys(
  raw: string,
  rules: { deployed: boolean; production: boolean },
): BootstrapKey[] {
  const entries = parseList(raw).map((entry, index): BootstrapKey => {
    const n = index + 1;
    const colon = entry.lastIndexOf(":");
    const key = colon > 0 ? entry.slice(0, colon) : entry;
    let scopes: BootstrapScope[] = [...DEFAULT_BOOTSTRAP_SCOPES];
    if (colon > 0) {
      const names = entry.slice(colon + 1).split("+");
      if (names.some((name) => !isScope(name))) {
        throw new ConfigError(
          "API_KEYS",
          `entry ${n} names a scope that is not one of ${API_KEY_SCOPES.join(", ")}`,
        );
      }
      scopes = [...new Set(names as BootstrapScope[])];
    }
    if (rules.deployed) {
      const weakness = secretWeakness(key);
      if (weakness) throw new ConfigError("API_KEYS", `has a key that ${weakness} (entry ${n})`);
    }
    // A key no client could send, or not the one meant (probe 36b F2): HTTP trims a header's
    // value; a second colon split `key:admin:chat` into the key `key:admin`.
    if (key !== key.trim()) {
      throw new ConfigError("API_KEYS", `entry ${n} has spaces around its key`);
    }
    // Invisible characters (U+200B, U+00AD) at its ends, or any other beyond printable ASCII,
    // which clients send in encodings of their own (probe 37a F2).
    if (/[^\x20-\x7e]/.test(key)) {
      throw new ConfigError(
        "API_KEYS",
        `entry ${n} has a character outside printable ASCII (invisible, or sent differently by each client)`,
      );
    }
    if (key.includes(":")) {
      throw new ConfigError(
        "API_KEYS",
        `entry ${n} has more than one ':'; write its scopes as scope+scope after one ':'`,
      );
    }
    if (key.startsWith("pal_") && !KEY_PATTERN.test(key)) {
      throw new ConfigError(
        "API_KEYS",
        `entry ${n} starts with pal_ but is not a whole pal_ key (a character too many or too few?)`,
      );
    }
    if (key.length < PREFIX_LENGTH) {
      throw new ConfigError("API_KEYS", `entry ${n} is shorter than ${PREFIX_LENGTH} characters`);
    }
    if (KEY_PATTERN.test(key) && !hasValidChecksum(key)) {
      throw new ConfigError(
        "API_KEYS",
        `entry ${n} looks like a pal_ key but its checksum is wrong`,
      );
    }
    if (rules.production && key.startsWith("pal_test_")) {
      throw new ConfigError("API_KEYS", `entry ${n} is a pal_test_ key, refused in production`);
    }
    return { key, scopes };
  });
  const seen = new Map<string, number>();
  entries.forEach(({ key }, index) => {
    // A pal_ key is found by its first 16 characters, any other by its hash (./api-key-format).
    const prefix = keyPrefix(key);
    const first = seen.get(prefix);
    if (first !== undefined) {
      throw new ConfigError(
        "API_KEYS",
        KEY_PATTERN.test(key)
          ? `entries ${first + 1} and ${index + 1} share their first ${PREFIX_LENGTH} characters; pal_ keys are found by them, so each must start differently`
          : `entries ${first + 1} and ${index + 1} are one key, or share its lookup prefix (the start of its SHA-256): use another key`,
      );
    }
    seen.set(prefix, index);
  });
  return entries;
}
