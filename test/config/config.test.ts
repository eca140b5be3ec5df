import { describe, expect, test } from "bun:test";
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import EFF_WORDS from "@zxcvbn-ts/language-common/src/diceware.json";
import { RedisClient } from "bun";
import { ConfigError, loadConfig } from "../../src/config";
import { leftoverDevelopmentKey } from "../../src/config/development-key";
import { ENGLISH_BIGRAMS } from "../../src/config/english-bigrams";
import { looseSecretFileMessage, looseSecretFiles } from "../../src/config/secret-file-modes";
import { issuedSecretWeakness, secretWeakness } from "../../src/config/secrets";
import { VARIABLES } from "../../src/config/variables";
import { tempDir } from "../support/app";

const STRONG = "k3J9xQ2mP7vL4nR8tW1yZ6bC5dF0gH3j";
/** RFC 4648 base32 of the bytes, padded, as `base32` writes it. */
/** UTF-32 of the text: little-endian after a byte order mark in base64, or big-endian in hex. */
function utf32Of(text: string, bigInHex: boolean): string {
  const points = bigInHex ? [...text] : ["\uFEFF", ...text];
  const bytes = Buffer.alloc(points.length * 4);
  for (const [i, point] of points.entries()) {
    if (bigInHex) bytes.writeUInt32BE(point.codePointAt(0)!, i * 4);
    else bytes.writeUInt32LE(point.codePointAt(0)!, i * 4);
  }
  return bigInHex ? bytes.toString("hex") : bytes.toString("base64");
}

function base32Of(bytes: Uint8Array, lowerCase = false): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let text = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      text += alphabet[(buffer >> bits) & 31];
    }
  }
  if (bits > 0) text += alphabet[(buffer << (5 - bits)) & 31];
  text += "=".repeat((8 - (text.length % 8)) % 8);
  return lowerCase ? text.toLowerCase() : text;
}

const STRONG_2 = "9Oud1KKpzyCWu6VCba0vvJNF7LxfbdFw";
const STRONG_3 = "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC";

// Shaped as the providers issue them: a Meta app secret is 32 hex characters; a Stripe endpoint
// secret `whsec_` and 32 alphanumerics (the Stripe CLI's, 64 hex characters).
const META_APP_SECRET = "3f9c1a7be04d2c85f61e9b0a47d3c2e8";
// Random too, but with 7 distinct characters and runs of neighbours, as about one in 9,000 of
// Meta's are: the strength check for secrets people make refused it.
const META_APP_SECRET_2 = "a3a3b2a9c9c3dcdc9a3b3a2c9d3d2a9b";
const STRIPE_WHSEC = "whsec_Qm7Tz2Kp9Vx4Lr8Nw1Yb6Cd5Fg0Hj3Ks";
const STRIPE_CLI_WHSEC = "whsec_1c0a85f1e27e2fdf68ec1a44508e5cf409bbf46dd39df563559c83580e4a7936";

const production = (extra: Record<string, string | undefined> = {}) => ({
  APP_ENV: "production",
  JWT_SECRET_KEY: STRONG,
  CSRF_SECRET_KEY: STRONG_2,
  AUDIT_SECRET_KEY: STRONG_3,
  ALLOWED_HOSTS: "api.example.test",
  METRICS_TOKEN: "m7T2kW9xQ4vR8nZ1yL6bP5cF0gH3jD2s",
  ...extra,
});

function refusal(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error("expected the configuration to be refused");
}

describe("development profile", () => {
  test("starts with no variables, generating the missing signing secrets", () => {
    const config = loadConfig({});
    expect(config.appEnv).toBe("development");
    expect(config.host).toBe("127.0.0.1");
    expect(config.port).toBe(3000);
    expect(config.databasePath).toBe("./data/palisade.db");
    expect(config.generatedSecrets).toEqual(["JWT_SECRET_KEY", "CSRF_SECRET_KEY"]);
    expect(config.jwt.secretKey.length).toBeGreaterThanOrEqual(43);
    expect(secretWeakness(config.jwt.secretKey)).toBeNull();
    expect(config.jwt.secretKey).not.toBe(loadConfig({}).jwt.secretKey);
  });

  test("applies the development defaults", () => {
    const config = loadConfig({});
    expect(config.rateLimit.perMinute).toBe(60);
    expect(config.jwt.accessTokenExpireMinutes).toBe(60);
    expect(config.jwt.refreshTokenExpireDays).toBe(30);
    expect(config.passwordPolicy).toEqual({ minLength: 8, maxLength: 256, minScore: 2 });
    expect(config.docsPage).toBe(true);
    expect(config.requireTls).toBe(false);
    expect(config.cors.allowedOrigins).toContain("http://localhost:3000");
    expect(config.trustProxy).toEqual({ kind: "none" });
  });

  test("returns a frozen object", () => {
    const config = loadConfig({});
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.jwt)).toBe(true);
    expect(() => {
      (config as { port: number }).port = 1;
    }).toThrow();
  });

  test("keeps a weak secret it was given, since nothing is deployed", () => {
    const config = loadConfig({ JWT_SECRET_KEY: "short" });
    expect(config.jwt.secretKey).toBe("short");
    expect(config.generatedSecrets).toEqual(["CSRF_SECRET_KEY"]);
  });
});

describe("production profile", () => {
  test("refuses an in-memory database, naming DATABASE_PATH (probe 26f F6); development keeps it", () => {
    for (const path of [":memory:", " :memory: "]) {
      const error = refusal(production({ DATABASE_PATH: path }));
      expect(error.variable).toBe("DATABASE_PATH");
      expect(error.message).toStartWith("DATABASE_PATH must be a file when APP_ENV=production");
    }
    expect(loadConfig({ DATABASE_PATH: ":memory:" }).databasePath).toBe(":memory:");
  });

  test("refuses a HOST or METRICS_HOST that is not an address or a host name", () => {
    for (const [name, value] of [
      ["HOST", "1.2.3.4\u001b[31m"],
      ["HOST", "a b"],
      ["METRICS_HOST", "x\ny"],
    ] as const) {
      const error = refusal(
        production({ [name]: value, ...(name === "METRICS_HOST" ? { METRICS_PORT: "9464" } : {}) }),
      );
      expect(error.variable).toBe(name);
      expect(error.message).toBe(`${name} must be an IP address or a host name`);
    }
    // Digits and dots that make no IPv4 address (probe 86d F6: refused as a port in use).
    for (const value of ["999.1.1.1", "1.2.3", "1.2.3.4.5", "256.0.0.1", "127.0.0.1."]) {
      const error = refusal(production({ HOST: value }));
      expect({ value, message: error.message }).toEqual({
        value,
        message: "HOST is not an IPv4 address (four numbers from 0 to 255)",
      });
    }
    for (const value of [
      "10.0.0.255",
      "0.0.0.0",
      "::",
      "::1",
      "[::1]",
      "fe80::1%eth0",
      "api.internal",
      "localhost",
      "palisade_api",
    ]) {
      expect(loadConfig(production({ HOST: value })).host).toBe(value);
    }
  });

  test("accepts strong secrets and applies the deployed defaults", () => {
    const config = loadConfig(production());
    expect(config.generatedSecrets).toEqual([]);
    expect(config.passwordPolicy).toEqual({ minLength: 12, maxLength: 256, minScore: 3 });
    expect(config.docsPage).toBe(false);
    expect(config.requireTls).toBe(true);
    expect(config.enumerationResistance).toBe(true);
    expect(config.cors.allowedOrigins).toEqual([]);
    expect(config.logLevel).toBe("info");
  });

  test.each([
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: undefined }, "is required when APP_ENV=production"],
    ["AUDIT_SECRET_KEY", { AUDIT_SECRET_KEY: undefined }, "is required when APP_ENV=production"],
    ["AUDIT_SECRET_KEY", { AUDIT_SECRET_KEY: "too-short-secret" }, "shorter than 32 bytes"],
    ["AUDIT_SECRET_KEY", { AUDIT_SECRET_KEY: STRONG }, "must differ from JWT_SECRET_KEY"],
    ["CSRF_SECRET_KEY", { CSRF_SECRET_KEY: "" }, "is required when APP_ENV=production"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "too-short-secret" }, "shorter than 32 bytes"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "ab".repeat(20) }, "too repetitive"],
    [
      "CSRF_SECRET_KEY",
      { CSRF_SECRET_KEY: "replace-me-with-a-long-random-string-0123" },
      "placeholder",
    ],
    ["METRICS_TOKEN", { METRICS_TOKEN: "metrics" }, "shorter than 32 bytes"],
    ["JWT_PREVIOUS_SECRET_KEY", { JWT_PREVIOUS_SECRET_KEY: "old" }, "shorter than 32 bytes"],
    [
      "JWT_PREVIOUS_SECRET_KEY",
      { JWT_PREVIOUS_SECRET_KEY: STRONG },
      "must differ from JWT_SECRET_KEY",
    ],
    ["API_KEYS", { API_KEYS: `${STRONG},weak` }, "has a key that is shorter"],
    // One value in two roles (probe 30d F1): named by the later variable, never the value.
    ["CSRF_SECRET_KEY", { CSRF_SECRET_KEY: STRONG }, "must differ from JWT_SECRET_KEY"],
    ["METRICS_TOKEN", { METRICS_TOKEN: STRONG_3 }, "must differ from AUDIT_SECRET_KEY"],
    ["API_KEYS", { API_KEYS: `${STRONG_3}:chat` }, "must differ from AUDIT_SECRET_KEY"],
    ["WHATSAPP_VERIFY_TOKEN", { WHATSAPP_VERIFY_TOKEN: STRONG_3 }, "must differ from AUDIT"],
    [
      "STRIPE_WEBHOOK_SECRET",
      { STRIPE_WEBHOOK_SECRET: `${STRIPE_WHSEC},${STRONG}` },
      "from JWT_SECRET_KEY",
    ],
    // A Redis password is a secret too (probe 43c F5), its lone user part as well, percent-decoded.
    ["REDIS_URL", { REDIS_URL: `rediss://:${STRONG}@cache.internal:6380` }, "from JWT_SECRET_KEY"],
    ["REDIS_URL", { REDIS_URL: `rediss://${STRONG_3}@cache.internal` }, "from AUDIT_SECRET_KEY"],
    [
      "REDIS_URL",
      {
        AUDIT_SECRET_KEY: "a7Q2+E9r/4yU1iO6pL3kJ8hG5fD0sZxCq",
        REDIS_URL: "redis://app:a7Q2%2BE9r%2F4yU1iO6pL3kJ8hG5fD0sZxCq@127.0.0.1:6379/0",
      },
      "from AUDIT_SECRET_KEY",
    ],
    ["CSRF_SECRET_KEY", { JWT_PREVIOUS_SECRET_KEY: STRONG_2 }, "from JWT_PREVIOUS_SECRET_KEY"],
    ["METRICS_TOKEN", { METRICS_TOKEN: `${STRONG_3}\n` }, "must differ from AUDIT_SECRET_KEY"],
    ["WHATSAPP_VERIFY_TOKEN", { WHATSAPP_VERIFY_TOKEN: ` ${STRONG} ` }, "from JWT_SECRET_KEY"],
    // The same value in another case, or in the quotes a compose list or a unit file left (probe 35c F4).
    ["METRICS_TOKEN", { METRICS_TOKEN: STRONG_3.toUpperCase() }, "from AUDIT_SECRET_KEY"],
    ["METRICS_TOKEN", { METRICS_TOKEN: `"${STRONG_3}"` }, "from AUDIT_SECRET_KEY"],
    ["METRICS_TOKEN", { METRICS_TOKEN: `'${STRONG_3.toLowerCase()}'` }, "from AUDIT_SECRET_KEY"],
    // The same bytes in the other base64 alphabet, or without the padding (probe 36a F5).
    [
      "WHATSAPP_ACCESS_TOKEN",
      {
        AUDIT_SECRET_KEY: "a7Q2+E9r/4yU1iO6pL3kJ8hG5fD0sZxCq==",
        WHATSAPP_ACCESS_TOKEN: "a7Q2-E9r_4yU1iO6pL3kJ8hG5fD0sZxCq",
      },
      "from AUDIT_SECRET_KEY",
    ],
    // Published defaults and written phrases pass the length and variety checks (probe 35c F2).
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "super-secret-jwt-token-with-at-least-32-characters-long" },
      "published default",
    ],
    [
      "CSRF_SECRET_KEY",
      { CSRF_SECRET_KEY: "your-very-long-random-csrf-key-goes-here" },
      "published default",
    ],
    ["METRICS_TOKEN", { METRICS_TOKEN: "prometheus-scrape-Password-2024-abcd" }, "written phrase"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "your-jwt-key-goes-here-make-it-long-enough" },
      "written phrase",
    ],
    // Runs of neighbouring characters pass the length and variety checks (probe 30d F2).
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "abcdefghijklmnopqrstuvwxyz012345" }, "neighbouring"],
    // Said again as well as a run: refused as the repetition it is first.
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "01234567890123456789012345678901" }, "too repetitive"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "ZYXWVUTSRQPONMLKJIHGFEDCBA987654" }, "neighbouring"],
    // What else a person makes up passed every check (probe 71a F2): a block said again, a walk
    // along the keyboard, a sentence or passphrase, emoji next to each other in Unicode.
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "aZ3$kL9!mQaZ3$kL9!mQaZ3$kL9!mQaZ3$kL9!mQ" },
      "too repetitive",
    ],
    [
      "CSRF_SECRET_KEY",
      { CSRF_SECRET_KEY: "Xy7#pQ2w-Xy7#pQ2w-Xy7#pQ2w-Xy7#pQ2w" },
      "too repetitive",
    ],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "qwertyuiopasdfghjklzxcvbnmqwerty" }, "keys"],
    ["METRICS_TOKEN", { METRICS_TOKEN: "1234567890-=QWERTYUIOP[]asdfghjkl;'" }, "keys"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "the quick brown fox jumps over the lazy dog" },
      "written phrase",
    ],
    [
      "AUDIT_SECRET_KEY",
      { AUDIT_SECRET_KEY: "Correct-Horse-Battery-Staple-Orange-Lamp" },
      "written phrase",
    ],
    [
      "JWT_SECRET_KEY",
      {
        JWT_SECRET_KEY: Array.from({ length: 32 }, (_, i) =>
          String.fromCodePoint(0x1f600 + i),
        ).join(""),
      },
      "neighbouring",
    ],
    // The shapes 71a's checks missed (probe 71d F2): counted as characters read, not bytes typed;
    // walks down the columns and on other layouts; words with numbers, upper case, any
    // punctuation, joined by capitals or not at all; emails, URLs; a script without case.
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "😀😁😂🤣😃😄😅😆😉😊" }, "shorter than 32 characters"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "我的生产环境密钥是一个很长的句子" },
      "shorter than 32 characters",
    ],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "ｃｈａｎｇｅｍｅ－ｐｌｅａｓｅ－ｎｏｗ！" },
      "shorter than 32 characters",
    ],
    [
      "JWT_SECRET_KEY",
      {
        JWT_SECRET_KEY:
          "我的生产环境密钥是一个很长很长的句子，请不要告诉任何人，谢谢你们大家的帮助",
      },
      "written phrase",
    ],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik," }, "neighbouring"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "zaq12wsxcde34rfvbgt56yhnmju78ik," }, "neighbouring"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "azertyuiopqsdfghjklmwxcvbn123456" }, "neighbouring"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "qwertzuiopasdfghjklyxcvbnm123456" }, "neighbouring"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "aoeuidhtns',.pyfgcrlqjkxbmwvz123" }, "neighbouring"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "Correct-Horse-Battery-Staple-2024!" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "CORRECT HORSE BATTERY STAPLE NOW" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "correct|horse|battery|staple|2024|x" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "CorrectHorse+BatteryStaple/2024/ok" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "MyCompanyProductionJwtKey2024!!!" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "correcthorsebatterystapleisgreat" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "JohnSmith1985-04-12-Production!!" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "john.smith@mycompany.io:prod-2024" }, "written phrase"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "https://www.company.com/production/signing/key/2024" },
      "written phrase",
    ],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "Summer2024!Winter2025!Spring2026" }, "written phrase"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "Правильная-Лошадь-Батарейка-Скрепка-42" },
      "written phrase",
    ],
    // A phrase with a timestamp or a long number after it (probe 72d F2).
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "Correct-Horse-Battery-Staple-1733356800" },
      "written phrase",
    ],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "thisisthejwtkeyforourproductionapi1733356800" },
      "written phrase",
    ],
    // What 71d's checks still let by (probe 72b F2–F6): a command or template never run, English
    // words run together, a phrase with an acronym or beside CJK, shifted and three-key walks,
    // and the same shapes as a secret a provider issues.
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "$(openssl rand -base64 48 | tr -d '\\n')" },
      "is a command or template that was never run or filled in",
    ],
    [
      "CSRF_SECRET_KEY",
      { CSRF_SECRET_KEY: "{{ .Values.csrf.key | b64enc | quote }}" },
      "is a command or template that was never run or filled in",
    ],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "mydogsnameisbuddyandheisagoodboy" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "thisisthejwtkeyforourproductionapi" }, "written phrase"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "allworkandnoplaymakesjackadullboy" }, "written phrase"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "Palisade-Production-JWTKey-2024-01-15" },
      "written phrase",
    ],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "我们公司的生产环境密钥 2024-12-04 version 1.0" },
      "written phrase",
    ],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "1qaz@WSX3edc$RFV5tgb^YHN7ujm*IK<" }, "neighbouring"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "!@#$%^&*()_+QWERTYUIOP{}ASDFGHJKL:" }, "neighbouring"],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "qazwsxedcrfvtgbyhnujmikolpqazwsxedc" }, "neighbouring"],
    // Probe 72c A5: two walks woven together; an issued secret that says one block again.
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8" }, "neighbouring"],
    [
      "WHATSAPP_APP_SECRET",
      { WHATSAPP_APP_SECRET: "letmeinletmeinletmein-2024-production" },
      "too repetitive",
    ],
    [
      "WHATSAPP_APP_SECRET",
      { WHATSAPP_APP_SECRET: "ｃｈａｎｇｅｍｅ-ｐｌｅａｓｅ" },
      "shorter than 32 characters",
    ],
    [
      "STRIPE_WEBHOOK_SECRET",
      { STRIPE_WEBHOOK_SECRET: "whsec_ThisIsOurStripeWebhookKeyForProd" },
      "has a secret that reads as a written phrase or a published default, not a generated secret (entry 1)",
    ],
    // Probe 73a: a template whose word is not followed by a space, `do not use` between dots, a
    // default word in capitals before small letters, a placeholder between dots.
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "<%= ENV.fetch('JWT_KEY_PRODUCTION') %>" },
      "is a command or template that was never run or filled in",
    ],
    [
      "CSRF_SECRET_KEY",
      { CSRF_SECRET_KEY: '{{env.Getenv("CSRF_SIGNING_KEY_PROD")}}' },
      "is a command or template that was never run or filled in",
    ],
    [
      "STRIPE_WEBHOOK_SECRET",
      { STRIPE_WEBHOOK_SECRET: "whsec_<%= ENV.fetch('STRIPE_WHSEC') %>" },
      "is a command or template that was never run or filled in, not a generated secret (entry 1)",
    ],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "do.not.use.k8Jq2LmZp9XwR4tY7vBn3cHs" }, "written phrase"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "jwtSECRETkey_k8Jq2LmZp9XwR4tY7vBn3cHs" },
      "written phrase",
    ],
    ["JWT_SECRET_KEY", { JWT_SECRET_KEY: "change.me.k8Jq2LmZp9XwR4tY7vBn3cHsaaa" }, "placeholder"],
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: "aZ3$kL9!mQAz3$Kl9!MqAZ3$KL9!MQaz3$kl9!mq" },
      "too repetitive",
    ],
    // Probe 73d F1: labels of a secret's words and a date, each word counted by its rank or as
    // random letters and the date as random digits; F2: a phrase of two-letter words.
    ...[
      "acme-corp-production-jwt-signing-key-january-2025",
      "PalisadeProductionKeyRotatedOnTheFifthOfDecember",
      "globex-prod-east-region-api-gateway-signing-key",
      "initech-prod-jwt-signing-key-20250115",
      "stark-production-auth-token-key-2025-01-15",
      "acme-prod-auth-token-key-2025-01-15",
      "Initech Payments Service Jwt Key Created March 2024",
      "UmbrellaStagingJwtSigningKey20250115",
      "mycompany.production.environment.authentication.key.2025!",
      "to be or not to be that is the question",
      "To-Be-Or-Not-To-Be-That-Is-The-Question",
      // A version's or quarter's capital glued after the words, a quarter between numbers, words
      // glued to a date, and a company's name no common word covers in a label run together.
      "UmbrellaProdWebhookVerificationTokenQ32024",
      "GLOBEX.PRODUCTION.API.KEY.2025Q1",
      "2024UmbrellaWhatsappVerifyTokenStg",
      "20250115GlobexMetricsBearerTokenLive",
      "umbrellaprodwhatsappverifytoken20250115",
      "globexstagingaudithmackeyjan2025",
      "UMBRELLALIVEWHATSAPPVERIFYTOKEN2025",
    ].map((label): [string, Record<string, string>, string] => [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: label },
      "reads as a written phrase or a published default",
    ]),
    // Written text run through base64 or hex is that text: the encoding adds no bit.
    [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: Buffer.from("Correct-Horse-Battery-Staple-2024!").toString("base64") },
      "is base64 of text that reads as a written phrase",
    ],
    [
      "JWT_SECRET_KEY",
      {
        JWT_SECRET_KEY: Buffer.from("acme-corp-production-jwt-signing-key-january-2025").toString(
          "hex",
        ),
      },
      "is hex of text that reads as a written phrase",
    ],
    [
      "METRICS_TOKEN",
      { METRICS_TOKEN: Buffer.from("letmein-2025-letmein-2025-letmein").toString("base64url") },
      "is base64 of text that is too repetitive",
    ],
    // `echo … | base64` and `| xxd -p` encode echo's line ending too, and a file its lines
    // (probes 75b F4, 75e F5).
    ...[
      ["Correct-Horse-Battery-Staple-2024!\n", "base64"],
      ["Correct-Horse-Battery-Staple-2024!\r\n", "base64"],
      ["acme-corp-production-jwt-signing-key-2025\n", "hex"],
      ["acme corp production\njwt signing key\n", "base64"],
      ["letmein-2025-letmein-2025-letmein\n\n", "base64url"],
    ].map(([text, encoding]): [string, Record<string, string>, string] => [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: Buffer.from(text!).toString(encoding as BufferEncoding) },
      `is ${encoding === "hex" ? "hex" : "base64"} of text that`,
    ]),
    // A label of words before a generated part as short as 32 to 64 bits: the part is counted at
    // what it carries, not taken for a sign that the whole value is generated (probe 75b F5).
    ...[
      "acme-prod-jwt-signing-key-geRfUw",
      "acme-prod-jwt-signing-key-JKzcru-H",
      "acme_corp_production_jwt_key_2025_VOtTaQ",
      "acme-prod-jwt-signing-key-Z5Cge2B31_A",
      // A label and a date and time: a day, an hour, a minute are guessed, not random characters
      // (probes 75b F1, 75e F6).
      "acme-prod-jwt-key-2025-01-15T10:00Z",
      "acme-prod-jwt-signing-key-2025-01-15 10:00:00",
      "acme-prod-jwt-signing-key-2025-01-15T10:00:00Z",
      "globex-prod-audit-key-2025-12-05T10:00:00+01:00",
      "acme-prod-jwt-key-2025-12-05T10:00:00.000Z",
      "GlobexProductionJwtKey2025-01-15T10:00Z",
      "acme-prod-jwt-key-20251205T100000Z",
      // Letters that only look Latin (Cyrillic а, с, р, о, ѕ, е) read as Latin (probe 75b F2).
      "асme-рrоd-jwt-ѕigning-kеy-jаnuаry-2025",
      // Cherokee small letters Unicode draws as Latin small capitals, read on to the letters
      // those copy (probe 91i F1).
      "ꭻwt-ꮪꭼcrꭼt-kꭼy-ꭲhꭺt-ꮋꭺs-ꭺt-lꭼꭺst-32-chꭺrꭺctꭼrs",
    ].map((label): [string, Record<string, string>, string] => [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: label },
      "reads as a written phrase or a published default",
    ]),
    // A label and a date and time as programs and people write them, and a Unix time (probe 76c
    // F1); a name and two label words with a date are a label too (76c F2).
    ...[
      "acme-prod-jwt-signing-key-12/05/2025 10:00:00",
      "acme-prod-jwt-signing-key-05.12.2025 10:00:00",
      "acme-prod-jwt-signing-key-Fri, 05 Dec 2025 10:00:00 GMT",
      // Two digits of the year before a time (probe 77a F5).
      "acme-prod-jwt-signing-key-15.01.25-10.00.00",
      "globex-production-webhook-key-01/15/25 10:00:00",
      "acme-prod-jwt-signing-key-Fri Dec  5 10:00:00 UTC 2025",
      "acme-prod-jwt-signing-key-Dec 5th, 2025 10:00",
      "acme_prod_jwt_2025-12-05-10-00-00",
      "acme-prod-jwt-signing-key-2025-1-5T10.00.00Z",
      "acme-prod-jwt-signing-key-1733356800",
      "acme-prod-jwt-key-1733356800123-x",
      "acme-prod-jwt-signing-key-2025-W49",
      "acme_prod_jwt_2025-01-15T10:00:00Z",
      "acme.prod.auth.2025-01-15T10:00:00Z",
      // Eight random bytes in hex are 64 bits, not 16 characters drawn from 36 (probe 76c F3).
      "acme-prod-jwt-signing-key-BB1E13FB32B45221",
      "palisade-production-signing-key-5fa20d822b9df0b1",
      // Accents off, the label it shows (probe 76c F5).
      "àcmè-pròd-jwt-sìgnìng-kèy-jànuàry-2025",
    ].map((label): [string, Record<string, string>, string] => [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: label },
      "reads as a written phrase or a published default",
    ]),
    // Weak text in base32, in UTF-16 (PowerShell's Unicode), ending in a NUL, after `0x`, or with
    // a space around the base64 (probe 76c F4).
    ...[
      ["base32", "changeme-please-this-is-our-prod-key", "base32"],
      ["base32 lower case", "changeme-please-this-is-our-prod-key", "base32"],
      ["UTF-16 base64", "changeme-please-this-is-our-prod-key", "base64"],
      // With its byte order mark, as PowerShell's `Out-File -Encoding unicode` writes it (77a F4).
      ["UTF-16 with a BOM, base64", "changeme-please-this-is-our-prod-key", "base64"],
      ["UTF-16BE with a BOM, hex", "changeme-please-this-is-our-prod-key", "hex"],
      // Past the first 256 code points after a mark, and UTF-32 (probe 78b F4, F5).
      ["UTF-16 with a BOM, base64", "my jwt secret – don’t share it please!", "base64"],
      ["UTF-32 with a BOM, base64", "changeme-please-this-is-our-prod-key", "base64"],
      ["UTF-32BE, hex", "changeme-please-this-is-our-prod-key", "hex"],
      ["base64", "changeme-please-this-is-our-prod-key\0", "base64"],
      ["spaced base64", "changeme-please-this-is-our-prod-key", "base64"],
      ["0x hex", "changeme-please-this-is-our-prod-key", "hex"],
    ].map(([how, text, encoding]): [string, Record<string, string>, string] => {
      const encoded =
        how === "0x hex"
          ? `0x${Buffer.from(text!).toString("hex")}`
          : how === "UTF-16 base64"
            ? Buffer.from(text!, "utf16le").toString("base64")
            : how!.startsWith("UTF-32")
              ? utf32Of(text!, how === "UTF-32BE, hex")
              : how === "UTF-16 with a BOM, base64"
                ? Buffer.from(`\uFEFF${text}`, "utf16le").toString("base64")
                : how === "UTF-16BE with a BOM, hex"
                  ? Buffer.from(`\uFEFF${text}`, "utf16le").swap16().toString("hex")
                  : how === "spaced base64"
                    ? ` ${Buffer.from(text!).toString("base64")} `
                    : how!.startsWith("base32")
                      ? base32Of(Buffer.from(text!), how === "base32 lower case")
                      : Buffer.from(text!).toString("base64");
      return ["JWT_SECRET_KEY", { JWT_SECRET_KEY: encoded }, `is ${encoding} of text that`];
    }),
    // Combining marks on its letters add no character (probe 76c F5).
    [
      "JWT_SECRET_KEY",
      {
        JWT_SECRET_KEY:
          "hunter2\u093c\u064b\u0320\u0330\u0591\u05a5\u08d3\u0300\u0310\u0343\u0350\u0483\u0610\u06d6\u0730\u07eb\u0816\u0360\u0e31\u0f18\u1ab0\u1dc0\u20d0\u2cef\u2de0",
      },
      "is shorter than 32 characters",
    ],
    // The alphabet's walk in alternating case, woven with digits or not (probe 75b F7).
    ...[
      "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
      "ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210",
      "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6",
      "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4",
    ].map((walk): [string, Record<string, string>, string] => [
      "JWT_SECRET_KEY",
      { JWT_SECRET_KEY: walk },
      "is a run of neighbouring characters or keys",
    ]),
    // Variation selectors draw nothing: `hunter2` and 25 of them is 7 characters (probe 75b F3).
    [
      "JWT_SECRET_KEY",
      {
        JWT_SECRET_KEY: `hunter2${Array.from({ length: 25 }, (_, i) =>
          String.fromCodePoint(i % 2 ? 0xe0100 + i * 3 : 0xfe00 + (i % 16)),
        ).join("")}`,
      },
      "is shorter than 32 characters",
    ],
    ["CORS_ALLOWED_ORIGINS", { CORS_ALLOWED_ORIGINS: "*" }, "* is refused"],
    ["CORS_ALLOWED_ORIGINS", { CORS_ALLOWED_ORIGINS: "https://a.test,*" }, "* is refused"],
    ["CORS_ALLOWED_ORIGINS", { CORS_ALLOWED_ORIGINS: "null" }, '"null" origin'],
    // Said as the case it is, not as "not a bare origin" (probe 35c I6).
    [
      "CORS_ALLOWED_ORIGINS",
      { CORS_ALLOWED_ORIGINS: "https://APP.example.com" },
      'a browser sends it in lower case, as "https://app.example.com"',
    ],
    ["CORS_ALLOWED_ORIGINS", { CORS_ALLOWED_ORIGINS: "http://app.test" }, "only https origins"],
    [
      "CORS_ALLOWED_ORIGINS",
      { CORS_ALLOWED_ORIGINS: "https://app.test/path" },
      "not a bare origin",
    ],
    ["CORS_ALLOWED_ORIGINS", { CORS_ALLOWED_ORIGINS: "https://*.app.test" }, "wildcard hosts"],
    ["APP_ENV", { APP_ENV: "prod" }, "must be one of development, staging, production"],
    ["LOG_LEVEL", { LOG_LEVEL: "verbose" }, "must be one of"],
    ["PORT", { PORT: "http" }, "must be a whole number"],
    ["PORT", { PORT: "70000" }, "between 0 and 65535"],
    ["RATE_LIMIT_PER_MINUTE", { RATE_LIMIT_PER_MINUTE: "0" }, "between 1 and"],
    ["RATE_LIMIT_BURST", { RATE_LIMIT_BURST: "-5" }, "must be a whole number"],
    ["ACCESS_TOKEN_EXPIRE_MINUTES", { ACCESS_TOKEN_EXPIRE_MINUTES: "99999" }, "between 1 and 1440"],
    ["TRUST_PROXY", { TRUST_PROXY: "true" }, "not trust-everything"],
    ["TRUST_PROXY", { TRUST_PROXY: "10.0.0.0/33" }, "invalid CIDR"],
    ["RATE_LIMIT_ALLOW_CIDRS", { RATE_LIMIT_ALLOW_CIDRS: "not-an-ip" }, "invalid address"],
    ["REDIS_URL", { REDIS_URL: "http://localhost:6379" }, "must use redis or rediss"],
    ["REDIS_URL", { REDIS_URL: "redis://:hunter2hunter2@10.0.0.7:6379" }, "use rediss://"],
    ["REDIS_URL", { REDIS_URL: "redis://app:hunter2hunter2@cache.internal" }, "use rediss://"],
    ["REDIS_URL", { REDIS_URL: "redis://hunter2hunter2@cache.internal" }, "use rediss://"],
    ["OPENAI_BASE_URL", { OPENAI_BASE_URL: "not a url" }, "must be a URL"],
    ["OPENAI_BASE_URL", { OPENAI_BASE_URL: "http://llm.internal/v1" }, "must use https"],
    ["STRIPE_API_URL", { STRIPE_API_URL: "http://10.0.0.5:12111" }, "must use https"],
    ["WHATSAPP_API_URL", { WHATSAPP_API_URL: "http://graph.example.test/v21.0" }, "must use https"],
    ["WHATSAPP_API_URL", { WHATSAPP_API_URL: "http://0.0.0.0:9000" }, "must use https"],
    ["SENTRY_DSN", { SENTRY_DSN: "ftp://x@sentry.test/1" }, "must be a Sentry DSN"],
    // An IPv6 zone id: no URL, said in the line, not thrown with the key (probe 45a F1).
    ["SENTRY_DSN", { SENTRY_DSN: "http://dsnkey123@[fe80::1%eth0]/1" }, "must be a Sentry DSN"],
    // Secrets that are not signing keys are as strong, and production's traffic as private
    // (probe 43c F5).
    ["WHATSAPP_APP_SECRET", { WHATSAPP_APP_SECRET: "password1234" }, "shorter than 32 bytes"],
    ["WHATSAPP_APP_SECRET", { WHATSAPP_APP_SECRET: "f".repeat(32) }, "too repetitive"],
    [
      "WHATSAPP_APP_SECRET",
      { WHATSAPP_APP_SECRET: "your-meta-app-secret-here-0123456789" },
      "written phrase",
    ],
    ["WHATSAPP_APP_SECRET_PREVIOUS", { WHATSAPP_APP_SECRET_PREVIOUS: "old" }, "shorter than"],
    ["WHATSAPP_VERIFY_TOKEN", { WHATSAPP_VERIFY_TOKEN: "x" }, "shorter than 32 bytes"],
    [
      "WHATSAPP_VERIFY_TOKEN",
      { WHATSAPP_VERIFY_TOKEN: "my-meta-verify-token-goes-here-2024" },
      "written phrase",
    ],
    [
      "STRIPE_WEBHOOK_SECRET",
      { STRIPE_WEBHOOK_SECRET: "whsec_1" },
      "has a secret that is shorter than 32 bytes (entry 1)",
    ],
    [
      "STRIPE_WEBHOOK_SECRET",
      { STRIPE_WEBHOOK_SECRET: `${STRIPE_WHSEC}, whsec_placeholder_Kp9Vx4Lr8Nw1Yb6Cd5` },
      "has a secret that is a placeholder, not a generated secret (entry 2)",
    ],
    // The prefix's own letters are not the secret's (probe 45a).
    [
      "STRIPE_WEBHOOK_SECRET",
      { STRIPE_WEBHOOK_SECRET: `whsec_${"a".repeat(32)}` },
      "has a secret that is too repetitive to be random (entry 1)",
    ],
    ["STRIPE_SECRET_KEY", { STRIPE_SECRET_KEY: "sk_test_123" }, "test-mode key (sk_test_…)"],
    [
      "STRIPE_SECRET_KEY",
      { STRIPE_SECRET_KEY: ` rk_test_${"4eC39HqLyjWDarjtT1zdp7dc".repeat(2)}` },
      "test-mode key (rk_test_…), refused when APP_ENV=production: use a live key",
    ],
    ["SENTRY_DSN", { SENTRY_DSN: "http://abc123@sentry.example.com/1" }, "must use https"],
    ["SENTRY_DSN", { SENTRY_DSN: "http://abc123@10.0.0.9:9000/1" }, "must use https"],
  ])("refuses %s (%o)", (variable, extra, reason) => {
    const error = refusal(production(extra));
    expect(error.variable).toBe(variable);
    expect(error.message).toContain(variable);
    expect(error.message).toContain(reason);
    expect(error.message.split("\n")).toHaveLength(1);
  });

  test("a generated secret is never taken for a run, a repetition or a phrase (thousands of each common shape), and a shared one is refused without its value", () => {
    const bytes = (n: number) => crypto.getRandomValues(new Uint8Array(n));
    const drawn = (alphabet: string, length: number) =>
      Array.from(bytes(length), (byte) => alphabet[byte % alphabet.length]).join("");
    const letters = "abcdefghijklmnopqrstuvwxyz";
    const base32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const printable = Array.from({ length: 94 }, (_, i) => String.fromCharCode(33 + i)).join("");
    const passphraseWords = EFF_WORDS.map((word) =>
      /^(?:secrets?|passwords?|default|sample|example|placeholder|insecure)$/.test(word)
        ? "meadow"
        : word,
    );
    // [shape, generate, refusals allowed in 3,000]: two for the shapes the README says are refused
    // about once in 50,000 or more; none for the rest.
    // base64url's `-` and `_` frame `your` or `here` (the documented word rule) about once in ten
    // million values (a CI run met `…-yoUR_8GUmw…` after a label): one refusal is allowed in each
    // base64url shape so that this tail is no flaky failure; two would be a change of rate.
    const shapes: [string, () => string, number?][] = [
      ["base64url", () => Buffer.from(bytes(32)).toString("base64url"), 1],
      ["hex", () => Buffer.from(bytes(32)).toString("hex")],
      ["base64", () => Buffer.from(bytes(48)).toString("base64")],
      ["base32", () => drawn(base32, 52)],
      ["base32 lower case", () => drawn(base32, 52).toLowerCase()],
      ["letters", () => drawn(letters, 40)],
      ["letters and digits", () => drawn(`${letters}0123456789`, 32)],
      ["printable ASCII", () => drawn(printable, 32)],
      ["two UUIDs", () => crypto.randomUUID() + crypto.randomUUID()],
      ["base58", () => drawn("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", 44)],
      ["symbols", () => drawn(`${letters}${letters.toUpperCase()}0123456789!@#$%^&*`, 32)],
      // A label of words before it is not a phrase, whatever alphabet follows (probe 72b F1).
      [
        "labelled base64url",
        () => `palisade-production-signing-key-${Buffer.from(bytes(32)).toString("base64url")}`,
        1,
      ],
      ["labelled letters", () => `palisade-production-signing-key-${drawn(letters, 32)}`],
      [
        "labelled capitals",
        () => `palisade-production-signing-key-${drawn(letters.toUpperCase(), 32)}`,
      ],
      ["labelled base32", () => `palisade-production-signing-key-${drawn(base32, 52)}`],
      // A short generated part after a label is a dozen letters: the label's words are not half
      // of the value (probe 72c A1 refused a fifth of these).
      [
        "labelled 32 hex",
        () => `palisade-production-signing-key-${Buffer.from(bytes(16)).toString("hex")}`,
      ],
      ["labelled UUID", () => `palisade-production-signing-key-${crypto.randomUUID()}`],
      // 128 bits in 22 characters after a label whose words count as nothing (probe 73d F1): its
      // few digits counted as drawn from ten refused one in 400; when its letters spell common
      // words, one in 70,000 is refused still.
      [
        "labelled 16 bytes base64url",
        () => `palisade-production-signing-key-${Buffer.from(bytes(16)).toString("base64url")}`,
        2,
      ],
      // Refused about once in a few million (none of 1,000,000 measured; one run of this test met
      // `PalisadeProductionKeyqjecjhurtgapptoouforqcapdaotltal`, its letters spelling `hurt`,
      // `app`, `too`, `four`): one refusal is allowed so that the tail is no flaky failure.
      ["labelled joined", () => `PalisadeProductionKey${drawn(letters, 32)}`, 1],
      // A date and time in a label, and hex after one, are counted as such (probe 76c F1, F3).
      [
        "labelled and dated base64url",
        () =>
          `acme-prod-jwt-${new Date(1.6e12 + Math.random() * 1e11).toISOString()}-${Buffer.from(bytes(32)).toString("base64url")}`,
        1,
      ],
      [
        "labelled 32 hex in capitals",
        () => `ACME-PROD-JWT-KEY-${Buffer.from(bytes(16)).toString("hex").toUpperCase()}`,
      ],
      // KeePass's printable set holds the space.
      ["printable with a space", () => drawn(` ${printable}`, 40)],
      // Punctuation cuts a generated part into short pieces shaped as words (probe 72d F1).
      ["labelled printable", () => `palisade-production-signing-key-${drawn(printable, 32)}`],
      [
        "labelled Django key",
        () => `palisade-production-signing-key-${drawn(`${letters}0123456789!@#$%^&*(-_=+)`, 32)}`,
      ],
      [
        "grouped capitals",
        () => Array.from({ length: 8 }, () => drawn(letters.toUpperCase(), 5)).join("-"),
      ],
      // Ten words drawn from EFF's list, as Bitwarden's and 1Password's generators draw them
      // (129 bits): one in twenty-two was refused when a common word counted as nothing (probe
      // 73a F5); about one in 50,000 is still refused. Without the list's few default words,
      // which are refused as words anywhere.
      [
        "ten-word passphrase",
        () =>
          Array.from(
            crypto.getRandomValues(new Uint32Array(10)),
            (drawnIndex) => passphraseWords[drawnIndex % passphraseWords.length],
          ).join("-"),
        2,
      ],
    ];
    for (const [shape, generate, allowed = 0] of shapes) {
      let refused = 0;
      for (let i = 0; i < (shape === "base64url" || shape === "hex" ? 10_000 : 3_000); i++) {
        const secret = generate();
        const weakness = secretWeakness(secret);
        if (weakness !== null && ++refused > allowed) {
          throw new Error(`${shape} ${secret} ${weakness} (${refused} refused)`);
        }
      }
    }
    const error = refusal(production({ METRICS_TOKEN: STRONG_3 }));
    expect(error.message).not.toContain(STRONG_3);
    // Development keeps what it is given: nothing is deployed.
    expect(loadConfig({ JWT_SECRET_KEY: STRONG, CSRF_SECRET_KEY: STRONG }).csrf.secretKey).toBe(
      STRONG,
    );
    // ~70,000 checks: 3.6 s alone on this machine, past bun's 5 s beside a running suite.
  }, 60_000);

  test("a generated value run through base64 or hex again is still generated", () => {
    for (let i = 0; i < 200; i++) {
      const generated = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
      for (const twice of [
        Buffer.from(generated).toString("base64"),
        Buffer.from(generated).toString("hex"),
        Buffer.from(`${generated}\n`).toString("base64"),
      ]) {
        expect(loadConfig(production({ JWT_SECRET_KEY: twice })).jwt.secretKey).toBe(twice);
      }
    }
  });

  test.each([
    "PalisadeProductionSigningKeyEbutHSgOFFSKA-1bPI9ftg",
    "PalisadeProductionSigningKeyXzlorg4MxdT0zUY34L1man",
    "PalisadeProductionSigningKeyr-6NZmO3F0OheyRVMfkOrg",
    "PalisadeProductionSigningKeysbnp_NwwwgmhopAMxdOgrw",
  ])(
    "16 random bytes after a label run together are not words for the three letters a short run holds among others (%s)",
    (secret) => {
      // `but`, `off`, `org`, `www` inside these runs refused about one such value in 5,700.
      expect(loadConfig(production({ JWT_SECRET_KEY: secret })).jwt.secretKey).toBe(secret);
    },
  );

  test("the English letter-pair table is whole: a row for a word's start and one for each letter, each a distribution", () => {
    expect(ENGLISH_BIGRAMS).toHaveLength(27 * 26);
    for (let row = 0; row < 27; row++) {
      let total = 0;
      for (let letter = 0; letter < 26; letter++)
        total += 2 ** (-ENGLISH_BIGRAMS[row * 26 + letter]! / 2);
      // Rounded to half bits, each chance is within 19 % of the one learnt.
      expect(total).toBeGreaterThan(0.8);
      expect(total).toBeLessThan(1.2);
    }
  });

  test("a value in a command's marks is judged in work that grows with its length, not its square (probe 73a F1)", () => {
    // 128 KiB of small letters, the most one environment variable holds on Linux: the check for a
    // word before a space tried every longer run from every letter, ~6 s a value (36 s for the
    // six), beyond this test's time; now a fraction of a second for all six (~2.5 s on a busy
    // machine, ~9 s beside two test suites: the time is set for that, not for a quiet one).
    const letters = Array.from(crypto.getRandomValues(new Uint8Array(131_068)), (byte) =>
      String.fromCharCode(97 + (byte % 26)),
    ).join("");
    for (const wrapped of [`$(${letters})`, `\`${letters}\``, `\${${letters}}`]) {
      expect(secretWeakness(wrapped)).toBeNull();
      expect(issuedSecretWeakness(wrapped)).toBeNull();
    }
  }, 20_000);

  test("never echoes a refused secret's value", () => {
    const error = refusal(production({ JWT_SECRET_KEY: "hunter2-is-my-password" }));
    expect(error.message).not.toContain("hunter2");
  });

  test("upstreams that carry a secret may be plain http (or redis) to a loopback address only", () => {
    for (const host of ["127.0.0.1:8080", "127.9.9.9", "[::1]:9000", "localhost:3000"]) {
      const config = loadConfig(
        production({
          OPENAI_BASE_URL: `http://${host}/v1`,
          STRIPE_API_URL: `http://${host}`,
          WHATSAPP_API_URL: `http://${host}/v21.0`,
        }),
      );
      expect(config.openai.baseUrl).toBe(`http://${host}/v1`);
    }
    const https = loadConfig(production({ OPENAI_BASE_URL: "https://llm.example.test/v1" }));
    expect(https.openai.baseUrl).toBe("https://llm.example.test/v1");
    // Redis: a password goes over TLS or to this host; a URL without one is a private network's.
    for (const redis of [
      "rediss://:hunter2hunter2@cache.internal:6380",
      "redis://:hunter2hunter2@127.0.0.1:6379",
      "redis://cache.internal:6379",
    ]) {
      expect(loadConfig(production({ REDIS_URL: redis })).redisUrl).toBe(redis);
    }
    expect(
      refusal(production({ REDIS_URL: "redis://:hunter2hunter2@10.0.0.7" })).message,
    ).not.toContain("hunter2");
    // Staging and development talk to whatever test servers they are given.
    const staging = loadConfig(
      production({ APP_ENV: "staging", STRIPE_API_URL: "http://stripe-mock.internal:12111" }),
    );
    expect(staging.stripe.apiUrl).toBe("http://stripe-mock.internal:12111");
  });

  test("provider-issued secrets, a live Stripe key, an https or loopback DSN and a Redis password of its own start (probe 43c F5)", () => {
    const issued = {
      WHATSAPP_APP_SECRET: META_APP_SECRET,
      WHATSAPP_APP_SECRET_PREVIOUS: META_APP_SECRET_2,
      WHATSAPP_VERIFY_TOKEN: "Vt4qL9xR2mW7kP1zN8bC3yF6hJ0dG5sA",
      STRIPE_WEBHOOK_SECRET: `${STRIPE_WHSEC},${STRIPE_CLI_WHSEC}`,
      STRIPE_SECRET_KEY: `sk_live_${"51HxY2eZvKYlo2C0aB".repeat(3)}`,
      SENTRY_DSN: "https://abc123def456@o1.ingest.sentry.io/4501234",
      REDIS_URL: "rediss://:r3D1sPw9Qx7Lm2Kv8Nt4Zb6Yc0Hf5Jg@cache.internal:6380",
    };
    const config = loadConfig(production(issued));
    expect(config.whatsapp.appSecret).toBe(META_APP_SECRET);
    expect(config.whatsapp.previousAppSecret).toBe(META_APP_SECRET_2);
    expect(config.stripe.webhookSecrets).toEqual([STRIPE_WHSEC, STRIPE_CLI_WHSEC]);
    expect(config.stripe.secretKey).toStartWith("sk_live_");
    expect(loadConfig(production({ STRIPE_SECRET_KEY: "rk_live_x" })).stripe.secretKey).toBe(
      "rk_live_x",
    );
    for (const dsn of ["http://abc123@127.0.0.1:9000/1", "http://abc123@[::1]:9000/1"]) {
      expect(loadConfig(production({ SENTRY_DSN: dsn })).sentry.dsn).toBe(dsn);
    }
    // Staging keeps a test-mode Stripe key and reports to any Sentry; its secrets are as strong.
    const loose = {
      STRIPE_SECRET_KEY: "sk_test_123",
      SENTRY_DSN: "http://abc123@sentry.example.com/1",
    };
    const staging = loadConfig(production({ APP_ENV: "staging", ...loose }));
    expect(staging.stripe.secretKey).toBe("sk_test_123");
    expect(staging.sentry.dsn).toBe("http://abc123@sentry.example.com/1");
    for (const [name, value] of <[string, string][]>[
      ["WHATSAPP_VERIFY_TOKEN", "x"],
      ["WHATSAPP_APP_SECRET", "password1234"],
      ["STRIPE_WEBHOOK_SECRET", "whsec_1"],
    ]) {
      expect(refusal(production({ APP_ENV: "staging", [name]: value })).variable).toBe(name);
    }
    expect(
      refusal(production({ APP_ENV: "staging", REDIS_URL: `rediss://:${STRONG}@cache` })).variable,
    ).toBe("REDIS_URL");
    // Development takes every one of them.
    const development = loadConfig({
      ...loose,
      WHATSAPP_APP_SECRET: "password1234",
      WHATSAPP_VERIFY_TOKEN: "x",
      STRIPE_WEBHOOK_SECRET: "whsec_1",
      JWT_SECRET_KEY: STRONG,
      REDIS_URL: `redis://:${STRONG}@10.0.0.7:6379`,
    });
    expect(development.whatsapp.verifyToken).toBe("x");
    expect(development.stripe.webhookSecrets).toEqual(["whsec_1"]);
    expect(development.stripe.secretKey).toBe("sk_test_123");
  });

  test("staging also refuses missing secrets but allows http origins", () => {
    expect(refusal({ APP_ENV: "staging" }).variable).toBe("JWT_SECRET_KEY");
    const config = loadConfig({
      ...production({ APP_ENV: "staging" }),
      CORS_ALLOWED_ORIGINS: "http://staging.app.test",
    });
    expect(config.cors.allowedOrigins).toEqual(["http://staging.app.test"]);
  });
});

describe("parsed values", () => {
  test.each([
    ['"sk_live_4eC39HqLyjWDarjtT1zdp7dc"', "quoted"],
    ["SK_LIVE_4eC39HqLyjWDarjtT1zdp7dc", "upper-case"],
    [" sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a space before it"],
    ["sk_live_", "no key after the prefix"],
    ["pk_live_4eC39HqLyjWDarjtT1zdp7dc", "a publishable key"],
    ["whsec_4eC39HqLyjWDarjtT1zdp7dc", "a webhook secret"],
  ])("STRIPE_SECRET_KEY=%p (%s) is refused in one line, in every profile", (value) => {
    for (const env of [{}, production({})]) {
      const error = refusal({ ...env, STRIPE_SECRET_KEY: value });
      expect(error.variable).toBe("STRIPE_SECRET_KEY");
      expect(error.message).toContain("is not a key as Stripe issues it");
      expect(error.message).not.toContain("4eC39HqLyjWDarjtT1zdp7dc");
      expect(error.message.split("\n")).toHaveLength(1);
    }
  });

  test("a key as Stripe issues it is taken as it is", () => {
    for (const key of ["sk_test_4eC39HqLyjWDarjtT1zdp7dc", "rk_test_51HxY2eZvKYlo2C0aB"]) {
      expect(loadConfig({ STRIPE_SECRET_KEY: key }).stripe.secretKey).toBe(key);
      // The line endings after it are the shell's, as a file's are (probe 72b F7).
      expect(loadConfig({ STRIPE_SECRET_KEY: `${key}\r\n` }).stripe.secretKey).toBe(key);
    }
    const live = `sk_live_${"51HxY2eZvKYlo2C0aB".repeat(3)}`;
    expect(loadConfig(production({ STRIPE_SECRET_KEY: live })).stripe.secretKey).toBe(live);
  });

  test("origin lists are trimmed and normalised", () => {
    const config = loadConfig(
      production({ CORS_ALLOWED_ORIGINS: " https://app.test/ , https://admin.app.test:8443" }),
    );
    expect(config.cors.allowedOrigins).toEqual(["https://app.test", "https://admin.app.test:8443"]);
  });

  test("TRUST_PROXY takes hops, CIDRs, bare addresses and named ranges", () => {
    expect(loadConfig({ TRUST_PROXY: "2" }).trustProxy).toEqual({ kind: "hops", hops: 2 });
    expect(loadConfig({ TRUST_PROXY: "0" }).trustProxy).toEqual({ kind: "none" });
    expect(loadConfig({ TRUST_PROXY: "10.0.0.0/8, 192.0.2.7, loopback" }).trustProxy).toEqual({
      kind: "cidrs",
      cidrs: ["10.0.0.0/8", "192.0.2.7/32", "127.0.0.0/8", "::1/128"],
    });
  });

  test.each([
    "0.0.0.0/0",
    "0.0.0.0/0,::/0",
    "::/0",
    "::ffff:0.0.0.0/96",
    "0.0.0.0/1,128.0.0.0/1",
    "10.0.0.0/8, 0.0.0.0/2, 64.0.0.0/2, 128.0.0.0/2, 192.0.0.0/2",
    "::/1, 8000::/1",
  ])("TRUST_PROXY=%p trusts every address and is refused", (value) => {
    const error = refusal({ TRUST_PROXY: value });
    expect(error.variable).toBe("TRUST_PROXY");
    expect(error.message).toMatch(/^TRUST_PROXY covers every IPv[46] address/);
  });

  test("TRUST_PROXY covering all of IPv6 but the IPv4-mapped block (folded to IPv4) is refused", () => {
    // The 96 ranges that together are everything but ::ffff:0:0/96.
    const mapped = 0xffffn << 32n;
    const ranges: string[] = [];
    for (let bit = 0; bit < 96; bit++) {
      const flipped = mapped ^ (1n << BigInt(127 - bit));
      const start = (flipped >> BigInt(127 - bit)) << BigInt(127 - bit);
      const groups = Array.from({ length: 8 }, (_, i) =>
        ((start >> BigInt(112 - 16 * i)) & 0xffffn).toString(16),
      );
      ranges.push(`${groups.join(":")}/${bit + 1}`);
    }
    const error = refusal({ TRUST_PROXY: ranges.join(",") });
    expect(error.message).toStartWith("TRUST_PROXY covers every IPv6 address");
    // Without one of them some IPv6 clients are left out, but nearly all are still trusted.
    expect(refusal({ TRUST_PROXY: ranges.slice(1).join(",") }).message).toStartWith(
      "TRUST_PROXY covers too much of the IPv6 addresses clients come from",
    );
  });

  test.each([
    ["0.0.0.0/1", "IPv4"],
    ["0.0.0.0/1,128.0.0.0/2,192.0.0.0/3,224.0.0.0/4", "IPv4"], // all but 240.0.0.0/4
    ["2000::/3", "IPv6"], // every global unicast address
    ["2000::/4, 3000::/5", "IPv6"],
    ["::/1", "IPv6"],
    // The registries' allocations: nearly every IPv6 client, in /12s and a /16 (re-probe 15d F2).
    ["2001::/16,2400::/12,2600::/12,2800::/12,2a00::/12,2c00::/12", "IPv6"],
    ["2a00::/19", "IPv6"],
    // NAT64's prefix holds every IPv4 client behind a translator; half of it, half of IPv4.
    ["64:ff9b::/96", "IPv4"],
    ["64:ff9b::/97", "IPv4"],
    ["64:ff9b::/64", "IPv4"],
  ])(
    "a list covering half or more of a family's clients, %p, is refused in both lists (re-probe 15c F7)",
    (value, family) => {
      for (const name of ["TRUST_PROXY", "RATE_LIMIT_ALLOW_CIDRS"]) {
        expect(refusal({ [name]: value }).message).toStartWith(
          `${name} covers too much of the ${family} addresses clients come from`,
        );
      }
    },
  );

  test("TRUST_PROXY and RATE_LIMIT_ALLOW_CIDRS ranges that leave most addresses out are accepted", () => {
    // Private ranges, a cloud's published proxy ranges, one NAT64 /104, a /20.
    const value =
      "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 64.0.0.0/3, fc00::/7, 2400:cb00::/32, 2606:4700::/32, 64:ff9b::10.0.0.0/104, 2a00::/20";
    expect(loadConfig({ TRUST_PROXY: value }).trustProxy.kind).toBe("cidrs");
    expect(loadConfig({ RATE_LIMIT_ALLOW_CIDRS: value }).rateLimit.allowCidrs).toHaveLength(9);
  });

  test.each(["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", "0.0.0.0/1,128.0.0.0/1"])(
    "RATE_LIMIT_ALLOW_CIDRS=%p exempts every address from every limit and is refused",
    (value) => {
      const error = refusal({ RATE_LIMIT_ALLOW_CIDRS: value });
      expect(error.variable).toBe("RATE_LIMIT_ALLOW_CIDRS");
      expect(error.message).toMatch(/^RATE_LIMIT_ALLOW_CIDRS covers every IPv[46] address/);
    },
  );

  test("RATE_LIMIT_ALLOW_CIDRS=::0.0.0.0/96 is the IPv4-compatible IPv6 range, not all of IPv4 (probe 15a F1)", () => {
    expect(loadConfig({ RATE_LIMIT_ALLOW_CIDRS: "::0.0.0.0/96" }).rateLimit.allowCidrs).toEqual([
      "::/96",
    ]);
  });

  test("optional integrations stay off until configured", () => {
    const config = loadConfig({});
    expect(config.redisUrl).toBeNull();
    expect(config.sentryDsn).toBeNull();
    expect(config.stripe.secretKey).toBeNull();
    expect(config.openai.model).toBe("gpt-4o-mini");
    const configured = loadConfig({ REDIS_URL: "redis://127.0.0.1:6379/0" });
    expect(configured.redisUrl).toBe("redis://127.0.0.1:6379/0");
  });

  test("REDIS_URL names its database as the path or not at all: any other path, a query (?db=2, which Bun's client ignores) or a fragment is refused in one line without the password (probe 46c F3)", () => {
    const refused: [string, string][] = [
      ["redis://:hunter2hunter2@127.0.0.1:6379/abc", "no path or a database number"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/-1", "no path or a database number"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/1.5", "no path or a database number"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/3/extra", "no path or a database number"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/%33", "no path or a database number"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/+3", "no path or a database number"],
      ["redis://:hunter2hunter2@127.0.0.1:6379?db=2", "must not have a query or fragment"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/?db=2", "must not have a query or fragment"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/2?", "must not have a query or fragment"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/2#x", "must not have a query or fragment"],
      ["redis://:hunter2hunter2@127.0.0.1:6379/4294967296", "past the largest Redis has"],
      ["redis://:hunter2hunter2@127.0.0.1:0", "must name a port"],
      ["redis:///3", "must name a host"],
      ["redis:hunter2hunter2", "must name a host"],
    ];
    for (const [url, reason] of refused) {
      const error = refusal({ REDIS_URL: url });
      expect(error.variable).toBe("REDIS_URL");
      expect(error.message).toContain(reason);
      expect(error.message).not.toContain("hunter2");
      expect(error.message).not.toContain("\n");
    }
    // Every URL accepted is one Bun's client takes: making the core cannot throw for it.
    for (const url of [
      "redis://127.0.0.1:6379",
      "redis://127.0.0.1:6379/",
      "redis://127.0.0.1:6379/2",
      "redis://127.0.0.1:6379/007",
      "redis://127.0.0.1:6379/2147483647",
      "rediss://app:p%40ss@cache.internal:6380/15",
      "redis://[::1]:6379/1",
      "REDIS://Cache_Host/3",
    ]) {
      const accepted = loadConfig({ REDIS_URL: url }).redisUrl!;
      new RedisClient(accepted, { autoReconnect: false }).close();
    }
  });

  test("WAL_TRUNCATE_MB: 64 MB unless set, 0 turns the truncation off, anything else is refused by name", () => {
    expect(loadConfig({}).walTruncateBytes).toBe(64 * 1024 * 1024);
    expect(loadConfig({ WAL_TRUNCATE_MB: "0" }).walTruncateBytes).toBe(0);
    expect(loadConfig({ WAL_TRUNCATE_MB: "200" }).walTruncateBytes).toBe(200 * 1024 * 1024);
    for (const value of ["-1", "1.5", "64MB", "70000"]) {
      expect(refusal({ WAL_TRUNCATE_MB: value }).message).toContain("WAL_TRUNCATE_MB");
    }
  });

  test("collects every secret value for scrubbing", () => {
    const config = loadConfig(production({ STRIPE_SECRET_KEY: "sk_live_abcdefgh12345" }));
    expect(config.secretValues).toContain(STRONG);
    expect(config.secretValues).toContain(STRONG_2);
    expect(config.secretValues).toContain("sk_live_abcdefgh12345");
  });
});

describe("secrets from files (NAME_FILE)", () => {
  test("reads the value from the file, without its trailing newline", () => {
    const dir = tempDir();
    try {
      const jwtPath = join(dir.path, "jwt");
      const csrfPath = join(dir.path, "csrf");
      writeFileSync(jwtPath, `${STRONG}\n`);
      writeFileSync(csrfPath, STRONG_2);
      const config = loadConfig({
        APP_ENV: "production",
        ALLOWED_HOSTS: "api.example.test",
        METRICS_PORT: "9464",
        JWT_SECRET_KEY_FILE: jwtPath,
        CSRF_SECRET_KEY_FILE: csrfPath,
        AUDIT_SECRET_KEY: STRONG_3,
      });
      expect(config.jwt.secretKey).toBe(STRONG);
      expect(config.csrf.secretKey).toBe(STRONG_2);
    } finally {
      dir.remove();
    }
  });

  test("a secret file other users can read or change is named with its mode, never its value; 0600 and 0640 are not (probe 30d F8)", () => {
    const dir = tempDir();
    try {
      const files: Record<string, [string, number]> = {
        JWT_SECRET_KEY_FILE: [STRONG, 0o644],
        CSRF_SECRET_KEY_FILE: [STRONG_2, 0o600],
        AUDIT_SECRET_KEY_FILE: [STRONG_3, 0o640],
        METRICS_TOKEN_FILE: ["q7Vm2Lx9Rk4Tz8Nw3Pb6Hc1Jd5Fg0SyE4uA", 0o620],
        STRIPE_SECRET_KEY_FILE: ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", 0o602],
      };
      const env: Record<string, string> = {
        APP_ENV: "production",
        ALLOWED_HOSTS: "api.example.test",
        METRICS_PORT: "9464",
      };
      for (const [variable, [value, mode]] of Object.entries(files)) {
        const path = join(dir.path, variable.toLowerCase());
        writeFileSync(path, `${value}\n`);
        chmodSync(path, mode);
        env[variable] = path;
      }
      const config = loadConfig(env);
      expect(config.looseSecretFiles).toEqual([
        { variable: "JWT_SECRET_KEY_FILE", problem: "mode", detail: "0644" },
        { variable: "STRIPE_SECRET_KEY_FILE", problem: "mode", detail: "0602" },
        { variable: "METRICS_TOKEN_FILE", problem: "mode", detail: "0620" },
      ]);
      // Read all the same: the warning is the operator's to act on.
      expect(config.jwt.secretKey).toBe(STRONG);
      const message = looseSecretFileMessage(config.looseSecretFiles[0]!);
      expect(message).toBe(
        "JWT_SECRET_KEY_FILE names a file other users can read or change (mode 0644): chmod 600 it, or 640 for the group the service runs in",
      );
      expect(message).not.toContain(STRONG);
    } finally {
      dir.remove();
    }
  });

  test("a secret file another user owns, or in a directory others can change, is named too; root's and a sticky directory's are not (probe 31b F4)", () => {
    const stats: Record<string, { mode: number; uid: number }> = {
      "/run/secrets": { mode: 0o755, uid: 0 },
      "/run/secrets/jwt": { mode: 0o600, uid: 1001 },
      "/run/secrets/csrf": { mode: 0o640, uid: 0 },
      "/tmp": { mode: 0o1777, uid: 0 },
      "/tmp/audit": { mode: 0o600, uid: 1000 },
      "/srv/shared": { mode: 0o777, uid: 1000 },
      "/srv/shared/metrics": { mode: 0o600, uid: 1000 },
    };
    const loose = looseSecretFiles(
      {
        JWT_SECRET_KEY_FILE: "/run/secrets/jwt",
        CSRF_SECRET_KEY_FILE: "/run/secrets/csrf",
        AUDIT_SECRET_KEY_FILE: "/tmp/audit",
        METRICS_TOKEN_FILE: "/srv/shared/metrics",
      },
      (path) => stats[path] ?? { mode: 0o755, uid: 0 },
      1000,
      (path) => path,
    );
    expect(loose).toEqual([
      { variable: "JWT_SECRET_KEY_FILE", problem: "owner", detail: "uid 1001" },
      { variable: "METRICS_TOKEN_FILE", problem: "directory", detail: "/srv/shared, mode 0777" },
    ]);
    expect(loose.map(looseSecretFileMessage)).toEqual([
      "JWT_SECRET_KEY_FILE names a file another user owns (uid 1001), who can put any value in it: chown it to the user the service runs as, or to root",
      "METRICS_TOKEN_FILE names a file on a path other users can change (/srv/shared, mode 0777), who can put another file in its place: keep it where only you or root can write every directory above it",
    ]);
  });

  test("any directory on the way to a secret file counts, and so does the one its link leads to (probe 31c F3)", () => {
    const stats: Record<string, { mode: number; uid: number }> = {
      "/": { mode: 0o755, uid: 0 },
      "/srv": { mode: 0o777, uid: 0 },
      "/srv/app": { mode: 0o700, uid: 1000 },
      "/srv/app/jwt": { mode: 0o600, uid: 1000 },
      "/etc": { mode: 0o755, uid: 0 },
      "/etc/palisade": { mode: 0o755, uid: 0 },
      "/etc/palisade/csrf": { mode: 0o600, uid: 1000 },
      "/home": { mode: 0o755, uid: 0 },
      "/home/eve": { mode: 0o700, uid: 1002 },
      "/home/eve/csrf": { mode: 0o600, uid: 1000 },
      "/etc/palisade/audit": { mode: 0o600, uid: 1000 },
    };
    const links: Record<string, string> = { "/etc/palisade/csrf": "/home/eve/csrf" };
    const loose = looseSecretFiles(
      {
        JWT_SECRET_KEY_FILE: "/srv/app/jwt",
        CSRF_SECRET_KEY_FILE: "/etc/palisade/csrf",
        AUDIT_SECRET_KEY_FILE: "/etc/palisade/audit",
      },
      (path) => stats[path] ?? null,
      1000,
      (path) => links[path] ?? path,
    );
    expect(loose).toEqual([
      { variable: "JWT_SECRET_KEY_FILE", problem: "directory", detail: "/srv, mode 0777" },
      {
        variable: "CSRF_SECRET_KEY_FILE",
        problem: "directory",
        detail: "/home/eve, owned by uid 1002",
      },
    ]);
  });

  test("every secret variable accepts _FILE", () => {
    const read: string[] = [];
    const secrets = VARIABLES.filter((v) => v.secret);
    const env: Record<string, string> = { APP_ENV: "development" };
    for (const variable of secrets) env[`${variable.name}_FILE`] = `/run/secrets/${variable.name}`;
    const values: Record<string, string> = {
      REDIS_URL: "redis://127.0.0.1:6379",
      SENTRY_DSN: "http://public@127.0.0.1:9000/1",
    };
    const config = loadConfig(env, {
      readFile: (path) => {
        read.push(path);
        const name = path.split("/").pop()!;
        return (
          values[name] ??
          (name === "STRIPE_SECRET_KEY"
            ? "sk_test_value0123456789abcdefghijklmnop\n"
            : `${name.toLowerCase()}-value-0123456789-abcdefghijklmnop`)
        );
      },
    });
    expect(read.sort()).toEqual(secrets.map((v) => `/run/secrets/${v.name}`).sort());
    expect(config.stripe.webhookSecrets[0]).toStartWith("stripe_webhook_secret-value");
    expect(config.redisUrl).toBe("redis://127.0.0.1:6379");
    // A secret file's one line break at the end is not the key's.
    expect(config.stripe.secretKey).toBe("sk_test_value0123456789abcdefghijklmnop");
  });

  test("refuses an unreadable file, naming the _FILE variable", () => {
    const error = refusal({ JWT_SECRET_KEY_FILE: "/nonexistent/palisade/jwt" });
    expect(error.variable).toBe("JWT_SECRET_KEY_FILE");
    expect(error.message).toContain("ENOENT");
  });

  test("refuses at once what is not a regular file of at most 64 KiB: a FIFO, a device, a directory, a big file (probe 26f F3)", () => {
    const dir = tempDir();
    try {
      const fifo = join(dir.path, "fifo");
      const made = Bun.spawnSync(["mkfifo", fifo]);
      expect(made.exitCode).toBe(0);
      const big = join(dir.path, "big");
      writeFileSync(big, "x".repeat(64 * 1024 + 1));
      const justRight = join(dir.path, "right");
      writeFileSync(justRight, `${"k".repeat(64 * 1024 - 1)}\n`);
      // A FIFO with no writer would hang a blocking read (and this test) forever: refused at once.
      for (const [path, reason] of [
        [fifo, "not a regular file"],
        ["/dev/zero", "not a regular file"],
        [dir.path, "not a regular file"],
        [big, "larger than 65536 bytes"],
      ] as const) {
        const error = refusal({ JWT_SECRET_KEY_FILE: path });
        expect(error.variable).toBe("JWT_SECRET_KEY_FILE");
        expect(error.message).toBe(`JWT_SECRET_KEY_FILE cannot be read (${reason})`);
      }
      const config = loadConfig({
        APP_ENV: "development",
        JWT_SECRET_KEY_FILE: justRight,
      });
      expect(config.jwt.secretKey).toHaveLength(64 * 1024 - 1);
    } finally {
      dir.remove();
    }
  });

  test("refuses a secret file that is not UTF-8 text (raw random bytes), naming the variable, never decoding it lossily (probe 71a F3)", () => {
    const dir = tempDir();
    try {
      const raw = join(dir.path, "raw");
      // 20 bytes with invalid UTF-8 in them: read lossily, each became U+FFFD (three bytes), so it
      // passed the 32-byte minimum, and another file differing in each high byte was the same key.
      writeFileSync(
        raw,
        Buffer.from("a\x80b\x81c\x82d\x83e\x84f\x85g\x86h\x87i\x88j\x89", "latin1"),
      );
      for (const appEnv of ["development", "production"]) {
        const error = refusal({ APP_ENV: appEnv, JWT_SECRET_KEY_FILE: raw });
        expect(error.variable).toBe("JWT_SECRET_KEY_FILE");
        expect(error.message).toBe("JWT_SECRET_KEY_FILE cannot be read (not UTF-8 text)");
      }
      // UTF-8 text is read as it was, a byte-order mark dropped.
      const text = join(dir.path, "text");
      writeFileSync(text, `\ufeffk3J9xQ2mP7vL4nR8tW1yZ6bC5dF0gH3j-é\n`);
      const config = loadConfig({ APP_ENV: "development", JWT_SECRET_KEY_FILE: text });
      expect(config.jwt.secretKey).toBe("k3J9xQ2mP7vL4nR8tW1yZ6bC5dF0gH3j-é");
    } finally {
      dir.remove();
    }
  });

  test("refuses a secret file holding a control character: UTF-16 without a BOM (a NUL after each character), NUL padding, a tab or a line break inside (probe 71d F1)", () => {
    const dir = tempDir();
    try {
      const write = (name: string, contents: Buffer | string): string => {
        const path = join(dir.path, name);
        writeFileSync(path, contents);
        return path;
      };
      // Valid UTF-8 as bytes, twice the length of the text: `changeme-please!` started production.
      const utf16 = write("utf16", Buffer.from("changeme-please!\n", "utf16le"));
      const padded = write("padded", `k3J9xQ2mP7vL4nR8${"\0".repeat(20)}\n`);
      const tab = write("tab", "k3J9xQ2mP7vL4nR8\tt1yZ6bC5dF0gH3jW8qE2rT4y\n");
      const inner = write("inner", "k3J9xQ2mP7vL4nR8t\nW1yZ6bC5dF0gH3jW8qE2rT4y\n");
      for (const appEnv of ["development", "production"]) {
        for (const [path, point] of [
          [utf16, "0000"],
          [padded, "0000"],
          [tab, "0009"],
          [inner, "000A"],
        ] as const) {
          const error = refusal({
            ...production({ APP_ENV: appEnv }),
            JWT_SECRET_KEY: undefined,
            JWT_SECRET_KEY_FILE: path,
          });
          expect(error.variable).toBe("JWT_SECRET_KEY_FILE");
          expect(error.message).toStartWith(
            `JWT_SECRET_KEY_FILE holds a control or invisible character (U+${point})`,
          );
          expect(error.message).toEndWith("write the secret as one line of UTF-8 text");
        }
      }
      expect(refusal({ JWT_SECRET_KEY_FILE: utf16 }).message).toContain(", as a UTF-16 file does");
      // Every line ending at the end is the file's, not the key's: LF, CR LF, two of them.
      for (const ending of ["\n", "\r\n", "\n\n", "\r\n\r\n", ""]) {
        const path = write("ending", `${STRONG}${ending}`);
        expect(
          loadConfig(production({ JWT_SECRET_KEY: undefined, JWT_SECRET_KEY_FILE: path })).jwt
            .secretKey,
        ).toBe(STRONG);
      }
    } finally {
      dir.remove();
    }
  });

  test("a secret from the environment is held to the file's rule: its line endings dropped, any other control or invisible character refused, C1, format and separator characters too (probe 72b F7, F8)", () => {
    const dir = tempDir();
    try {
      const file = join(dir.path, "jwt");
      writeFileSync(file, `${STRONG}\n`);
      const fromFile = loadConfig(
        production({ JWT_SECRET_KEY: undefined, JWT_SECRET_KEY_FILE: file }),
      );
      const fromEnvironment = loadConfig(production({ JWT_SECRET_KEY: `${STRONG}\n` }));
      // One key, however it was given: replicas given the file and the variable signed with two.
      expect(fromEnvironment.jwt.secretKey).toBe(fromFile.jwt.secretKey);
      for (const [hidden, point] of [
        ["\t", "0009"],
        ["\u001b[2J", "001B"],
        ["\u0085", "0085"],
        ["\u009b", "009B"],
        ["\u200b", "200B"],
        ["\ufeff", "FEFF"],
        ["\u00ad", "00AD"],
        ["\u2028", "2028"],
        ["\n", "000A"],
      ] as const) {
        const value = `${STRONG.slice(0, 16)}${hidden}${STRONG.slice(16)}`;
        for (const appEnv of ["development", "production"]) {
          const error = refusal({ ...production({ APP_ENV: appEnv }), JWT_SECRET_KEY: value });
          // A line break inside is most often base64 wrapped by openssl: said so (probe 72c A4).
          const hint =
            point === "000A"
              ? ", as base64 wrapped over lines (openssl rand -base64 past 48 bytes: add -A) does"
              : "";
          expect(error.message).toBe(
            `JWT_SECRET_KEY holds a control or invisible character (U+${point})${hint}: write the secret as one line of UTF-8 text`,
          );
        }
        writeFileSync(file, `${value}\n`);
        expect(
          refusal(production({ JWT_SECRET_KEY: undefined, JWT_SECRET_KEY_FILE: file })).message,
        ).toStartWith(`JWT_SECRET_KEY_FILE holds a control or invisible character (U+${point})`);
      }
    } finally {
      dir.remove();
    }
  });

  test("refuses an empty file and refuses NAME together with NAME_FILE", () => {
    const dir = tempDir();
    try {
      const empty = join(dir.path, "empty");
      writeFileSync(empty, "\n");
      expect(refusal({ CSRF_SECRET_KEY_FILE: empty }).message).toContain("empty file");
      const both = refusal({ JWT_SECRET_KEY: STRONG, JWT_SECRET_KEY_FILE: empty });
      expect(both.variable).toBe("JWT_SECRET_KEY_FILE");
      expect(both.message).toContain("set only one");
    } finally {
      dir.remove();
    }
  });
});

test(".env.example documents exactly the variables Palisade reads", () => {
  const example = readFileSync(new URL("../../.env.example", import.meta.url), "utf8");
  const documented = [...example.matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1]);
  expect(new Set(documented)).toEqual(new Set(VARIABLES.map((v) => v.name)));
});

describe("configuration users will type", () => {
  test("ENVIRONMENT is another name for APP_ENV; both set and different is refused", () => {
    expect(
      loadConfig({ ENVIRONMENT: "staging", ...production({ APP_ENV: undefined }) }).appEnv,
    ).toBe("staging");
    expect(loadConfig(production({ ENVIRONMENT: "production" })).appEnv).toBe("production");
    expect(loadConfig(production({ APP_ENV: "Production" })).appEnv).toBe("production");
    const both = refusal({ APP_ENV: "development", ENVIRONMENT: "production" });
    expect(both.message).toBe("ENVIRONMENT differs from APP_ENV; set one of them");
    // A production deploy that spells it ENVIRONMENT gets the production profile's checks.
    expect(refusal({ ENVIRONMENT: "production" }).message).toContain("JWT_SECRET_KEY is required");
    expect(refusal({ ENVIRONMENT: "prod" }).message).toStartWith("ENVIRONMENT must be one of");
  });

  test("log levels in any case, with WARNING and CRITICAL mapped to the logger's names", () => {
    const level = (LOG_LEVEL: string) => loadConfig({ LOG_LEVEL }).logLevel;
    expect(level("WARNING")).toBe("warn");
    expect(level("warning")).toBe("warn");
    expect(level("CRITICAL")).toBe("fatal");
    expect(level("INFO")).toBe("info");
    expect(level(" Debug ")).toBe("debug");
    expect(refusal({ LOG_LEVEL: "verbose" }).message).toStartWith("LOG_LEVEL must be one of");
  });

  test("a variable with one of Palisade's prefixes that it does not know is named, with the closest", () => {
    const config = loadConfig({
      JWT_SECRET: "x",
      RATE_LIMIT_LOGINS: "5",
      CORS_ALLOWED_ORIGIN: "http://localhost:3000",
      JWT_SECRET_KEY_FILE: undefined,
      PATH: "/usr/bin",
      HOME: "/root",
      DATABASE_URL: "postgres://elsewhere",
    });
    expect(config.unknownVariables).toEqual([
      { name: "CORS_ALLOWED_ORIGIN", suggestion: "CORS_ALLOWED_ORIGINS" },
      { name: "JWT_SECRET", suggestion: "JWT_SECRET_KEY" },
      { name: "RATE_LIMIT_LOGINS", suggestion: "RATE_LIMIT_LOGIN" },
    ]);
    expect(loadConfig({ JWT_SECRET_KEY_FILE: "" }).unknownVariables).toEqual([]);
  });

  test("a near miss of a known name is named too, under any prefix; other programs' names are not (probe 82a F3)", () => {
    const config = loadConfig({
      // Lost silently before: the WAL still truncated under Litestream, the proxy's clients
      // sharing one address.
      WAL_TRUNCATE_MIB: "0",
      TRUSTED_PROXY: "1",
      TRUSTED_PROXIES: "10.0.0.0/8",
      ALERT_EMAILS: "ops@example.com",
      METRIC_TOKEN: "x",
      PAYMENTS_MAX_AMOUNT: "100",
      LOG_LEVELS: "debug",
      // Other programs' settings, often beside ours.
      DATABASE_URL: "postgres://elsewhere",
      REDIS_HOST: "cache",
      NODE_ENV: "production",
      HOSTNAME: "web-1",
      SSL_CERT_FILE: "/etc/ssl/cert.pem",
      KUBERNETES_SERVICE_HOST: "10.0.0.1",
      KUBERNETES_SERVICE_PORT: "443",
      npm_config_user_agent: "bun/1.4.5",
      XDG_RUNTIME_DIR: "/run/user/0",
      TRUSTED_CA_FILE: "/etc/ssl/ca.pem",
      TRUSTSTORE_PATH: "/etc/ssl/store",
    });
    expect(config.unknownVariables).toEqual([
      { name: "ALERT_EMAILS", suggestion: "ALERT_EMAIL" },
      { name: "LOG_LEVELS", suggestion: "LOG_LEVEL" },
      { name: "METRIC_TOKEN", suggestion: "METRICS_TOKEN" },
      { name: "PAYMENTS_MAX_AMOUNT", suggestion: "PAYMENT_MAX_AMOUNT" },
      { name: "TRUSTED_PROXIES", suggestion: "TRUST_PROXY" },
      { name: "TRUSTED_PROXY", suggestion: "TRUST_PROXY" },
      { name: "WAL_TRUNCATE_MIB", suggestion: "WAL_TRUNCATE_MB" },
    ]);
  });

  test("CSRF_PREVIOUS_SECRET_KEY is accepted in rotation, strong and different from the current key", () => {
    const config = loadConfig(
      production({ CSRF_PREVIOUS_SECRET_KEY: "p7Q2mW9xL4vR8tZ1yK6bN5cF0gH3jD2s" }),
    );
    expect(config.csrf.previousSecretKey).toBe("p7Q2mW9xL4vR8tZ1yK6bN5cF0gH3jD2s");
    expect(config.secretValues).toContain("p7Q2mW9xL4vR8tZ1yK6bN5cF0gH3jD2s");
    expect(refusal(production({ CSRF_PREVIOUS_SECRET_KEY: STRONG_2 })).message).toBe(
      "CSRF_PREVIOUS_SECRET_KEY must differ from CSRF_SECRET_KEY",
    );
    expect(refusal(production({ CSRF_PREVIOUS_SECRET_KEY: "short" })).name).toBe("ConfigError");
  });
});

describe("AUDIT_SECRET_KEY in development", () => {
  test("is kept in a 0600 file beside the database and read back by the next load", () => {
    const dir = tempDir();
    try {
      const env = { DATABASE_PATH: join(dir.path, "db", "p.db") };
      const first = loadConfig(env);
      const file = join(dir.path, "db", "p.db.audit-key");
      expect(first.audit.developmentKeyFile).toBe(file);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(secretWeakness(first.audit.secretKey)).toBeNull();
      expect(loadConfig(env).audit.secretKey).toBe(first.audit.secretKey);
      expect(first.generatedSecrets).not.toContain("AUDIT_SECRET_KEY");
      expect(first.secretValues).toContain(first.audit.secretKey);
    } finally {
      dir.remove();
    }
  });

  test("a key file other users can read is refused", () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "p.db");
      writeFileSync(`${path}.audit-key`, "some-development-key-value-0123456789", { mode: 0o644 });
      chmodSync(`${path}.audit-key`, 0o644);
      const error = refusal({ DATABASE_PATH: path });
      expect(error.variable).toBe("AUDIT_SECRET_KEY");
      expect(error.message).toContain("readable by other users");
    } finally {
      dir.remove();
    }
  });

  test("an empty key file, or one that cannot be created, is refused naming AUDIT_SECRET_KEY", () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "p.db");
      writeFileSync(`${path}.audit-key`, "\n", { mode: 0o600 });
      expect(refusal({ DATABASE_PATH: path }).message).toContain("is empty");
      writeFileSync(join(dir.path, "file"), "");
      const blocked = refusal({ DATABASE_PATH: join(dir.path, "file", "p.db") });
      expect(blocked.variable).toBe("AUDIT_SECRET_KEY");
      expect(blocked.message).toContain("cannot be used");
    } finally {
      dir.remove();
    }
  });

  test("a FIFO or a device at the key file is refused in one line, not waited on (probe 82a F2)", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "p.db");
      const fifo = `${path}.audit-key`;
      expect(Bun.spawnSync(["mkfifo", "-m", "600", fifo]).exitCode).toBe(0);
      // In other processes, killed if they wait: a read of the FIFO would block forever.
      const run = async (cmd: string[], env: Record<string, string>) => {
        const proc = Bun.spawn(cmd, {
          cwd: join(import.meta.dir, "../.."),
          env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
          stdout: "pipe",
          stderr: "pipe",
          timeout: 15_000,
        });
        const [stdout, stderr, code] = await Promise.all([
          new Response(proc.stdout).text(),
          new Response(proc.stderr).text(),
          proc.exited,
        ]);
        return { code, stdout, stderr, killed: proc.signalCode !== null };
      };
      const check = await run(["bun", "run", "src/cli/index.ts", "config:check"], {
        DATABASE_PATH: path,
      });
      expect(check.killed).toBe(false);
      expect(check.code).toBe(2);
      expect(check.stderr.trim().split("\n")).toHaveLength(1);
      expect(check.stderr).toContain("AUDIT_SECRET_KEY");
      expect(check.stderr).toContain("not a regular file");
      // A deployed profile only looks for a leftover development key: none that can be read.
      const leftover = await run(
        [
          "bun",
          "-e",
          `const { leftoverDevelopmentKey } = await import("./src/config/development-key");
           console.log(JSON.stringify(leftoverDevelopmentKey(process.env.DB_PATH, "x")));`,
        ],
        { DB_PATH: path },
      );
      expect(leftover.killed).toBe(false);
      expect(leftover.stdout.trim()).toBe("null");
    } finally {
      dir.remove();
    }
  }, 40_000);

  test("an in-memory database gets a key for the run; a set key is used as given", () => {
    const memory = loadConfig({ DATABASE_PATH: ":memory:" });
    expect(memory.generatedSecrets).toContain("AUDIT_SECRET_KEY");
    expect(memory.audit.developmentKeyFile).toBeNull();
    expect(
      loadConfig({ AUDIT_SECRET_KEY: "given", DATABASE_PATH: ":memory:" }).audit.secretKey,
    ).toBe("given");
  });
});

describe("ALLOWED_HOSTS", () => {
  test("is required in production, optional elsewhere (unset: any well-formed host)", () => {
    expect(refusal(production({ ALLOWED_HOSTS: undefined })).message).toBe(
      "ALLOWED_HOSTS is required when APP_ENV=production",
    );
    expect(refusal(production({ ALLOWED_HOSTS: " , " })).message).toBe(
      "ALLOWED_HOSTS is required when APP_ENV=production",
    );
    expect(loadConfig({ APP_ENV: "development" }).allowedHosts).toBeNull();
    expect(
      loadConfig({ ...production(), APP_ENV: "staging", ALLOWED_HOSTS: "" }).allowedHosts,
    ).toBeNull();
  });

  test("names are normalised: lower case, no trailing dot, IPv6 in brackets", () => {
    const config = loadConfig(
      production({ ALLOWED_HOSTS: "API.Example.Test., 203.0.113.4, [2001:DB8::1]" }),
    );
    expect(config.allowedHosts).toEqual(["api.example.test", "203.0.113.4", "[2001:db8::1]"]);
  });

  test.each([
    "*",
    "https://api.example.test",
    "api.example.test:443",
    "api.example.test/x",
    "a b",
    "010.1.1.1",
    "::1",
  ])("refuses %p with one line naming the variable", (value) => {
    const error = refusal(production({ ALLOWED_HOSTS: value }));
    expect(error.message).toStartWith("ALLOWED_HOSTS ");
  });
});

describe("metrics exposure and Sentry settings", () => {
  const open = { METRICS_TOKEN: undefined };

  test("production refuses /metrics open on the main port without METRICS_TOKEN", () => {
    const error = refusal(production(open));
    expect(error.variable).toBe("METRICS_TOKEN");
    expect(error.message).toBe(
      "METRICS_TOKEN is required when APP_ENV=production, unless METRICS_PORT puts /metrics on a loopback listener of its own",
    );
    expect(error.message).not.toContain("\n");
  });

  test("production refuses a metrics listener reachable from outside without METRICS_TOKEN", () => {
    for (const host of ["0.0.0.0", "::", "10.0.0.5", "metrics.internal"]) {
      const error = refusal(production({ ...open, METRICS_PORT: "9464", METRICS_HOST: host }));
      expect(error.message).toBe(
        "METRICS_TOKEN is required when APP_ENV=production and METRICS_HOST is not a loopback address",
      );
    }
  });

  test("production accepts a loopback metrics listener of its own, or a token", () => {
    const loopback = loadConfig(production({ ...open, METRICS_PORT: "9464" }));
    expect(loopback.metricsToken).toBeNull();
    expect(loopback.metricsListener).toEqual({
      host: "127.0.0.1",
      ports: { first: 9464, last: 9464 },
    });
    for (const host of ["::1", "127.0.0.2", "localhost"]) {
      const config = loadConfig(production({ ...open, METRICS_PORT: "9464", METRICS_HOST: host }));
      expect(config.metricsListener?.host).toBe(host);
    }
    const exposed = loadConfig(production({ METRICS_PORT: "9464-9467", METRICS_HOST: "0.0.0.0" }));
    expect(exposed.metricsListener?.ports).toEqual({ first: 9464, last: 9467 });
    // Outside production, an open /metrics is the operator's choice.
    expect(loadConfig({ ...production(open), APP_ENV: "staging" }).metricsToken).toBeNull();
  });

  test("METRICS_PORT and METRICS_HOST are validated with one line naming the variable", () => {
    const cases: [Record<string, string>, string][] = [
      [
        { METRICS_PORT: "nine" },
        "METRICS_PORT must be a port (9100) or a range of ports (9100-9103)",
      ],
      [
        { METRICS_PORT: "9105-9100" },
        "METRICS_PORT must be a range of at most 1024 ports, lowest first",
      ],
      [{ METRICS_PORT: "70000" }, "METRICS_PORT must be between 1 and 65535"],
      [{ METRICS_PORT: "3000" }, "METRICS_PORT must not include PORT"],
      [{ METRICS_PORT: "2999-3001" }, "METRICS_PORT must not include PORT"],
      [{ METRICS_HOST: "127.0.0.1" }, "METRICS_HOST needs METRICS_PORT"],
    ];
    for (const [env, message] of cases) expect(refusal(env).message).toBe(message);
  });

  test("SENTRY_TRACES_SAMPLE_RATE is a fraction, 0 by default; APP_RELEASE defaults to the package version", () => {
    const defaults = loadConfig({});
    expect(defaults.sentry).toEqual({ dsn: null, release: "palisade@0.1.0", tracesSampleRate: 0 });
    expect(loadConfig({ SENTRY_TRACES_SAMPLE_RATE: "0.25" }).sentry.tracesSampleRate).toBe(0.25);
    expect(loadConfig({ SENTRY_TRACES_SAMPLE_RATE: "1" }).sentry.tracesSampleRate).toBe(1);
    for (const bad of ["1.5", "-0.1", "half", "1e-3"]) {
      expect(refusal({ SENTRY_TRACES_SAMPLE_RATE: bad }).message).toBe(
        "SENTRY_TRACES_SAMPLE_RATE must be a number from 0 to 1",
      );
    }
    expect(loadConfig({ APP_RELEASE: "palisade@2026.11.28-abc123" }).sentry.release).toBe(
      "palisade@2026.11.28-abc123",
    );
    expect(refusal({ APP_RELEASE: "two words" }).message).toBe(
      "APP_RELEASE must be 1 to 200 printable characters without spaces",
    );
    const dsn = "https://public@sentry.example.test/42";
    const reporting = loadConfig({ SENTRY_DSN: dsn });
    expect(reporting.sentry.dsn).toBe(dsn);
    expect(reporting.secretValues).toContain(dsn);
  });

  // The SDK prints a DSN it rejects on the console (key included) and then reports nothing; the
  // config refuses every DSN the SDK would reject, in one line that never repeats the value.
  test.each([
    ["no public key", "http://sentry.example.test/42"],
    ["no project id", "http://DSNKEY0123456789@127.0.0.1:1/"],
    ["no path at all", "https://DSNKEY0123456789@sentry.example.test"],
    ["a project id that is not a number", "https://DSNKEY0123456789@sentry.example.test/proj"],
    ["a key of non-word characters", "https://DSN-KEY0123456789@sentry.example.test/42"],
    ["a query string", "https://DSNKEY0123456789@sentry.example.test/42?x=1"],
    ["a port out of range", "https://DSNKEY0123456789@sentry.example.test:99999/42"],
    ["another protocol", "ftp://DSNKEY0123456789@sentry.example.test/42"],
    ["not a URL", "DSNKEY0123456789"],
  ])("a SENTRY_DSN with %s is refused naming SENTRY_DSN, without its value", (_label, dsn) => {
    const error = refusal({ SENTRY_DSN: dsn });
    expect(error.variable).toBe("SENTRY_DSN");
    expect(error.message).toStartWith("SENTRY_DSN must be a Sentry DSN");
    expect(error.message).not.toContain("DSNKEY0123456789");
    expect(error.message).not.toContain("\n");
  });

  test("every DSN shape the SDK accepts is accepted, and its public key is a scrubbed secret", () => {
    for (const dsn of [
      "https://abc123def456@o1.ingest.sentry.io/4501234",
      "http://public:secret@127.0.0.1:9000/1",
      "https://publickey0123@sentry.example.test/some/path/42",
      "http://publickey0123@[::1]:9000/7",
    ]) {
      expect(loadConfig({ SENTRY_DSN: dsn }).sentry.dsn).toBe(dsn);
    }
    expect(
      loadConfig({ SENTRY_DSN: "https://publickey0123@sentry.example.test/42/" }).sentry.dsn,
    ).toBe("https://publickey0123@sentry.example.test/42");
    expect(
      loadConfig({ SENTRY_DSN: "https://publickey0123@sentry.example.test/42" }).secretValues,
    ).toContain("publickey0123");
  });
});

describe("a development audit key file beside a deployed database (probe 35c F3)", () => {
  test("is found, and told apart from AUDIT_SECRET_KEY; none, or an in-memory database, is null", () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "app.db");
      const key = "k7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxCq1";
      expect(leftoverDevelopmentKey(path, key)).toBeNull();
      writeFileSync(`${path}.audit-key`, `${key}\n`, { mode: 0o600 });
      expect(leftoverDevelopmentKey(path, key)).toEqual({
        file: `${path}.audit-key`,
        sameKey: true,
      });
      expect(leftoverDevelopmentKey(path, `${key}x`)).toEqual({
        file: `${path}.audit-key`,
        sameKey: false,
      });
      expect(leftoverDevelopmentKey(":memory:", key)).toBeNull();
    } finally {
      dir.remove();
    }
  });
});
