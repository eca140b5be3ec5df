/**
 * ALERT_EMAIL and ALERT_SMTP_* (validated with the rest of the configuration) and
 * `bun run cli alerts:config`, whose output Debian's amtool must accept.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../../src/config";
import { tempDir } from "../support/app";
import { cliInProcess } from "../support/cli";
import { runToExit } from "../support/process";
import { amtoolAvailable, check } from "../support/prometheus";

const BASE = { DATABASE_PATH: ":memory:" };
const MAIL = {
  ALERT_EMAIL: "oncall@example.org, security@example.org",
  ALERT_SMTP_SMARTHOST: "mail.example.org:587",
  ALERT_SMTP_FROM: "palisade@example.org",
};

const refusal = (env: Record<string, string>) => {
  try {
    loadConfig({ ...BASE, ...env });
  } catch (error) {
    if (error instanceof ConfigError) return error.variable;
    throw error;
  }
  return null;
};

describe("ALERT_* configuration", () => {
  test("parsed into config.alerts; unset is empty", () => {
    expect(loadConfig(BASE).alerts).toEqual({
      email: [],
      smtpSmarthost: null,
      smtpFrom: null,
      smtpUsername: null,
    });
    expect(loadConfig({ ...BASE, ...MAIL, ALERT_SMTP_USERNAME: "relay-user" }).alerts).toEqual({
      email: ["oncall@example.org", "security@example.org"],
      smtpSmarthost: "mail.example.org:587",
      smtpFrom: "palisade@example.org",
      smtpUsername: "relay-user",
    });
  });

  test("values that are not plain addresses or host:port are refused naming the variable", () => {
    for (const bad of [
      "not-an-address",
      "ops@example.org\nBcc: victim@example.org",
      "Ops <ops@example.org>",
      "ops@localhost",
      "ops@@example.org",
    ]) {
      expect(refusal({ ALERT_EMAIL: bad })).toBe("ALERT_EMAIL");
    }
    for (const bad of [
      "mail.example.org",
      "mail.example.org:0",
      "mail.example.org:99999",
      "a b:25",
    ]) {
      expect(refusal({ ALERT_SMTP_SMARTHOST: bad })).toBe("ALERT_SMTP_SMARTHOST");
    }
    expect(refusal({ ALERT_SMTP_FROM: "x" })).toBe("ALERT_SMTP_FROM");
    expect(refusal({ ALERT_SMTP_USERNAME: "has space" })).toBe("ALERT_SMTP_USERNAME");
    expect(refusal({ ALERT_SMTP_SMARTHOST: "[2001:db8::1]:465" })).toBeNull();
  });
});

describe("bun run cli alerts:config", () => {
  test("each missing setting is one line naming the variable, exit 2", async () => {
    const cases: [Record<string, string>, string][] = [
      [{}, "ALERT_EMAIL"],
      [{ ALERT_EMAIL: MAIL.ALERT_EMAIL }, "ALERT_SMTP_SMARTHOST"],
      [
        { ALERT_EMAIL: MAIL.ALERT_EMAIL, ALERT_SMTP_SMARTHOST: MAIL.ALERT_SMTP_SMARTHOST },
        "ALERT_SMTP_FROM",
      ],
      [{ ...MAIL, ALERT_EMAIL: "nope" }, "ALERT_EMAIL"],
    ];
    for (const [env, variable] of cases) {
      const result = await cliInProcess(["alerts:config"], { ...BASE, ...env });
      expect(result.code).toBe(2);
      expect(result.stdout).toBe("");
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).toStartWith(`palisade alerts:config: ${variable} `);
    }
  });

  test("--out replaces a configuration it wrote, never another file such as the database (probe 86d F2)", async () => {
    const { path: dir, remove } = tempDir();
    const database = join(dir, "palisade.db");
    const other = new Uint8Array([...Buffer.from("SQLite format 3\0"), 1, 2, 3]);
    await Bun.write(database, other);
    const refused = await cliInProcess(["alerts:config", "--out", database], { ...BASE, ...MAIL });
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe(
      "palisade alerts:config: --out names a file this command did not write; remove it or choose another path",
    );
    expect(new Uint8Array(readFileSync(database))).toEqual(other);
    const out = join(dir, "alertmanager.yml");
    for (const email of ["first@example.org", "second@example.org"]) {
      const wrote = await cliInProcess(["alerts:config", "--out", out], {
        ...BASE,
        ...MAIL,
        ALERT_EMAIL: email,
      });
      expect({ email, code: wrote.code }).toEqual({ email, code: 0 });
      expect(readFileSync(out, "utf8")).toContain(`to: ${email}`);
    }
    // What is no regular file is written as asked, never read first (probe 86e F6).
    const device = await cliInProcess(["alerts:config", "--out", "/dev/null"], {
      ...BASE,
      ...MAIL,
    });
    expect({ code: device.code, stderr: device.stderr }).toEqual({ code: 0, stderr: "" });
    remove();
  });

  test("writes a configuration mailing ALERT_EMAIL through the relay, the password only as a file", async () => {
    const result = await cliInProcess(["alerts:config", "--password-file", "/etc/am/smtp"], {
      ...BASE,
      ...MAIL,
      ALERT_SMTP_USERNAME: "relay-user",
    });
    expect(result.code).toBe(0);
    // Its own values, not the shipped example's (probe 27c F5).
    expect(result.stdout).not.toContain("example values");
    expect(result.stdout).toContain("from ALERT_EMAIL and\n# ALERT_SMTP_*.");
    const config = Bun.YAML.parse(result.stdout) as {
      global: Record<string, unknown>;
      route: { receiver: string; routes: { receiver: string }[] };
      receivers: { name: string; email_configs: { to: string; send_resolved: boolean }[] }[];
    };
    expect(config.global).toEqual({
      smtp_smarthost: "mail.example.org:587",
      smtp_from: "palisade@example.org",
      smtp_require_tls: true,
      smtp_auth_username: "relay-user",
      smtp_auth_password_file: "/etc/am/smtp",
    });
    // Every route ends at the one receiver, which mails every address.
    expect(config.route.receiver).toBe("email");
    expect(config.route.routes.every((route) => route.receiver === "email")).toBe(true);
    expect(config.receivers).toEqual([
      {
        name: "email",
        email_configs: [{ to: "oncall@example.org, security@example.org", send_resolved: true }],
      },
    ]);

    // A relay on loopback (a local Postfix) needs no STARTTLS; any other must offer it.
    for (const [smarthost, requireTls] of [
      ["127.0.0.1:25", false],
      ["localhost:25", false],
      ["[::1]:25", false],
      ["127.example.org:25", true],
      ["10.0.0.5:25", true],
    ] as const) {
      const relayed = await cliInProcess(["alerts:config"], {
        ...BASE,
        ...MAIL,
        ALERT_SMTP_SMARTHOST: smarthost,
      });
      expect((Bun.YAML.parse(relayed.stdout) as typeof config).global.smtp_require_tls).toBe(
        requireTls,
      );
    }

    // Without a relay login there is no authentication and no password file.
    const open = await cliInProcess(["alerts:config"], { ...BASE, ...MAIL });
    expect(Object.keys((Bun.YAML.parse(open.stdout) as typeof config).global).sort()).toEqual([
      "smtp_from",
      "smtp_require_tls",
      "smtp_smarthost",
    ]);
  });

  test.skipIf(!amtoolAvailable)("amtool check-config accepts what --out writes", async () => {
    const dir = tempDir();
    try {
      const out = join(dir.path, "alertmanager.yml");
      // The real entry point, as an operator runs it.
      const result = await runToExit(
        ["bun", "run", "src/cli/index.ts", "alerts:config", "--out", out],
        {
          ...BASE,
          ...MAIL,
          ALERT_SMTP_USERNAME: "relay-user",
        },
      );
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(`wrote ${out}`);
      expect(readFileSync(out, "utf8")).toContain("oncall@example.org");
      const checked = await check("amtool", ["check-config", out]);
      expect(checked.stdout).toContain("SUCCESS");
      expect(checked.code).toBe(0);
    } finally {
      dir.remove();
    }
  });
});
