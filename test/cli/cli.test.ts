import { describe, expect, test } from "bun:test";
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  CliError,
  EXIT_USAGE,
  parseArgs,
  parseDuration,
  requireFlag,
  wholeNumberFlag,
} from "../../src/cli/command";
import { COMMANDS } from "../../src/cli/commands";
import { MIGRATION_TAG_BY_MILLIS } from "../../src/db/migrations";
import { tempDir } from "../support/app";
import { cliInProcess } from "../support/cli";
import { REPO_ROOT, runToExit, startService } from "../support/process";

/** The real entry point, in its own process. */
const spawnCli = (args: string[], env: Record<string, string> = {}) =>
  runToExit(["bun", "run", "src/cli/index.ts", ...args], env);

/** The same runner in process: faster, and what the coverage gate sees. */
const cli = (args: string[], env: Record<string, string> = {}) => cliInProcess(args, env);

describe("bun run cli", () => {
  test("with no command prints the help screen and exits 2", async () => {
    const result = await spawnCli([]);
    expect(result.code).toBe(2);
    expect(result.stdout).toContain("Usage: bun run cli <command>");
    expect(result.stdout).toContain("config:check");
    expect(result.stdout).toContain("db:migrate");
  });

  test("help exits 0; a command's --help prints its usage", async () => {
    expect((await cli(["help"])).code).toBe(0);
    const result = await cli(["db:migrate", "--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("Usage: bun run cli db:migrate");
  });

  test("an unknown command is one line on stderr and exit 2", async () => {
    const result = await cli(["users:explode"]);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toContain('unknown command "users:explode"');
  });

  test("config:check prints the configuration with secrets masked", async () => {
    const secret = "k3J9xQ2mP7vL4nR8tW1yZ6bC5dF0gH3j";
    const result = await cli(["config:check"], {
      APP_ENV: "production",
      ALLOWED_HOSTS: "api.example.test",
      METRICS_TOKEN: "m7T2kW9xQ4vR8nZ1yL6bP5cF0gH3jD2s",
      JWT_SECRET_KEY: secret,
      CSRF_SECRET_KEY: "9Oud1KKpzyCWu6VCba0vvJNF7LxfbdFw",
      AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC",
    });
    expect(result.code).toBe(0);
    const described = JSON.parse(result.stdout);
    expect(described.appEnv).toBe("production");
    expect(described.jwtSecretKey).toBe("(set)");
    expect(described.auditSecretKey).toBe("(set)");
    expect(result.stdout).not.toContain(secret);
  });

  test("config:check names unknown variables on stderr, with the closest known one", async () => {
    const result = await cli(["config:check"], {
      APP_ENV: "development",
      DATABASE_PATH: ":memory:",
      JWT_SECRET: "x",
    });
    expect(result.code).toBe(0);
    expect(result.stderr.trim()).toBe(
      "warning: unknown variable JWT_SECRET: did you mean JWT_SECRET_KEY?",
    );
    expect(JSON.parse(result.stdout).appEnv).toBe("development");
  });

  test("config:check says so when no APP_ENV names the profile, blank included: the executable would start as production (probe 71a F4)", async () => {
    const unnamed: Record<string, string>[] = [
      {},
      { APP_ENV: " " },
      { APP_ENV: "", ENVIRONMENT: "" },
    ];
    for (const named of unnamed) {
      const result = await cli(["config:check"], { DATABASE_PATH: ":memory:", ...named });
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout).appEnv).toBe("development");
      expect(result.stderr.trim()).toBe(
        "warning: APP_ENV is not set: checked as the development profile `bun run start` serves; the executable (dist/palisade, the Docker image) starts as production: set APP_ENV=production to check what it needs",
      );
    }
    const named: Record<string, string>[] = [
      { APP_ENV: "development" },
      { ENVIRONMENT: "development" },
    ];
    for (const profile of named) {
      const result = await cli(["config:check"], { DATABASE_PATH: ":memory:", ...profile });
      expect(result.stderr).toBe("");
    }
  });

  test("config:check says so when a dotenv file sets APP_ENV or ENVIRONMENT: `bun run` reads it, the executable does not (probe 71d F4)", async () => {
    const { path: dir, remove } = tempDir();
    try {
      const check = async () => {
        const proc = Bun.spawn(["bun", join(REPO_ROOT, "src/cli/index.ts"), "config:check"], {
          cwd: dir,
          env: {
            PATH: process.env.PATH ?? "",
            HOME: process.env.HOME ?? "/tmp",
            DATABASE_PATH: ":memory:",
          },
          stdout: "pipe",
          stderr: "pipe",
        });
        const [stdout, stderr] = await Promise.all([
          new Response(proc.stdout).text(),
          new Response(proc.stderr).text(),
        ]);
        expect(await proc.exited).toBe(0);
        return { appEnv: (JSON.parse(stdout) as { appEnv: string }).appEnv, stderr: stderr.trim() };
      };
      writeFileSync(
        join(dir, ".env"),
        "# made by hand\nexport APP_ENV=development\nLOG_LEVEL=info\n",
      );
      expect(await check()).toEqual({
        appEnv: "development",
        stderr:
          "warning: .env sets APP_ENV: `bun run` reads it, the executable (dist/palisade, the Docker image) does not and starts as production without it: give the executable APP_ENV in its environment",
      });
      writeFileSync(join(dir, ".env"), "LOG_LEVEL=info\n");
      writeFileSync(join(dir, ".env.local"), "ENVIRONMENT = development\n");
      expect((await check()).stderr).toStartWith("warning: .env.local sets ENVIRONMENT:");
      rmSync(join(dir, ".env.local"));
      // Neither names the profile: the warning is the one for no APP_ENV at all.
      expect((await check()).stderr).toStartWith("warning: APP_ENV is not set:");
    } finally {
      remove();
    }
  });

  test("config:check names DATABASE_PATH_FILE as unknown: the path is no secret (probe 35c I5)", async () => {
    const result = await cli(["config:check"], {
      APP_ENV: "development",
      DATABASE_PATH: ":memory:",
      DATABASE_PATH_FILE: "/run/secrets/db_path",
    });
    expect(result.stderr.trim()).toBe(
      "warning: unknown variable DATABASE_PATH_FILE: did you mean DATABASE_PATH?",
    );
  });

  test("config:check and the start name a secret file other users can read, never its value (probe 30d F8)", async () => {
    const dir = tempDir();
    try {
      const secret = "k3J9xQ2mP7vL4nR8tW1yZ6bC5dF0gH3jW8e";
      const path = join(dir.path, "jwt_secret_key");
      writeFileSync(path, `${secret}\n`);
      chmodSync(path, 0o644);
      const env = {
        APP_ENV: "development",
        DATABASE_PATH: join(dir.path, "app.db"),
        JWT_SECRET_KEY_FILE: path,
      };
      const checked = await cli(["config:check"], env);
      expect(checked.code).toBe(0);
      expect(checked.stderr).toBe(
        "warning: JWT_SECRET_KEY_FILE names a file other users can read or change (mode 0644): chmod 600 it, or 640 for the group the service runs in",
      );
      const service = await startService({ ...env, LOG_LEVEL: "info" });
      expect(await service.stop()).toBe(0);
      const warning = service
        .stdout()
        .split("\n")
        .find((line) => line.includes("JWT_SECRET_KEY_FILE names a file"));
      expect(JSON.parse(warning!)).toMatchObject({
        level: "warn",
        variable: "JWT_SECRET_KEY_FILE",
        mode: "0644",
      });
      expect(service.stdout()).not.toContain(secret);
      chmodSync(path, 0o600);
      expect((await cli(["config:check"], env)).stderr).toBe("");
    } finally {
      dir.remove();
    }
  });

  test("config:check refuses a bad configuration with one line and exit 2", async () => {
    const result = await spawnCli(["config:check"], { APP_ENV: "production" });
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      "palisade config:check: JWT_SECRET_KEY is required when APP_ENV=production",
    );
  });

  test("db:migrate creates and migrates the database", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "cli.db");
      const result = await cli(["db:migrate"], { DATABASE_PATH: path });
      expect(result.code).toBe(0);
      const tags = [...MIGRATION_TAG_BY_MILLIS.values()];
      expect(result.stdout.trim()).toBe(
        `database ${path} is at migration ${tags.at(-1)} (${tags.length} of ${tags.length})`,
      );
      expect(await Bun.file(path).exists()).toBe(true);
    } finally {
      dir.remove();
    }
  });
});

test("parseArgs reads --flag value, --flag=value, bare flags and positionals", () => {
  expect(parseArgs(["ID1", "--name", "bot", "--scopes=chat,payments", "--yes"])).toEqual({
    positional: ["ID1"],
    flags: { name: "bot", scopes: "chat,payments", yes: true },
    repeated: [],
    missingValue: [],
    valueless: [],
  });
  expect(parseArgs(["--email", "a@x.test", "--email=b@x.test"]).repeated).toEqual(["email"]);
});

test("every command refuses an option it does not take, and one given twice, with exit 2 and its usage, doing nothing (probe 15b, finding 6)", async () => {
  const dir = tempDir();
  try {
    const env = { DATABASE_PATH: join(dir.path, "cli-options.db") };
    for (const command of COMMANDS) {
      const typo = await cliInProcess([command.name, "--bogus", "x"], env);
      expect({ command: command.name, code: typo.code, stderr: typo.stderr }).toEqual({
        command: command.name,
        code: 2,
        stderr: `palisade ${command.name}: unknown option --bogus; usage: bun run cli ${command.usage}`,
      });
      expect(typo.stdout).toBe("");
    }
    // The typo of the report: a plain user would have been made, and exit 0.
    const rol = await cliInProcess(
      ["users:create", "--email", "typo@example.test", "--rol", "admin"],
      env,
    );
    expect(rol.code).toBe(2);
    expect(rol.stderr).toContain("unknown option --rol");
    const twice = await cliInProcess(
      ["users:create", "--email", "one@example.test", "--email=two@example.test"],
      env,
    );
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain("--email is given more than once");
    // Arguments the usage does not name, and options not spelt `--` (re-probe 15c F5).
    for (const [args, said] of [
      [["keys:revoke", "A", "B"], "takes 1 argument, and was given 2"],
      [["blocks:remove", "1", "extra"], "takes 1 argument, and was given 2"],
      [
        ["users:create", "--email", "c@example.test", "extra"],
        'takes no arguments besides its options, and was given "extra"',
      ],
      [["users:create", "--email", "c@example.test", "-role", "admin"], '"-role" is not an option'],
      [
        ["users:create", "--email", "c@example.test", "\u2014role", "admin"],
        '"\u2014role" is not an option',
      ],
      [
        ["users:create", "--email", "c@example.test", "--__proto__", "admin"],
        "unknown option --__proto__",
      ],
      // An option that needs a value given none, and one that takes none given one (re-probe 15d F3).
      [["keys:create", "--name", "k", "--scopes", "chat", "--expires"], "--expires needs a value"],
      [
        ["keys:create", "--name", "k", "--scopes", "chat", "--owner", "--env", "live"],
        "--owner needs a value",
      ],
      [["keys:create", "--name", "k", "--scopes", "chat", "--owner="], "--owner needs a value"],
      [["users:create", "--email", "c@example.test", "--password-stdin", "no"], 'was given "no"'],
      [["audit:tail", "--json", "5"], 'was given "5"'],
      [["audit:top", "--json=false"], "--json takes no value"],
      [["blocks:remove", "\u20101"], "is not an option"],
      [["db:backup", "\uff0d\uff0dhelp"], "is not an option"],
      [["db:backup", "\u00ad--help"], "is not an option"],
      [["db:backup", " --help"], "is not an option"],
    ] as const) {
      const result = await cliInProcess([...args], env);
      expect({ args, code: result.code, said: result.stderr.includes(said) }).toEqual({
        args,
        code: 2,
        said: true,
      });
    }
    // Refused before anything ran: the database was not even opened, so not created.
    expect(await Bun.file(env.DATABASE_PATH).exists()).toBe(false);
  } finally {
    dir.remove();
  }
});

test("parseDuration reads minutes, hours and days up to a bound and refuses anything else", () => {
  expect(parseDuration("ttl", "45m", 365)).toBe(45 * 60_000);
  expect(parseDuration("ttl", "12h", 365)).toBe(12 * 3_600_000);
  expect(parseDuration("ttl", "30d", 365)).toBe(30 * 86_400_000);
  expect(parseDuration("ttl", "365d", 365)).toBe(365 * 86_400_000);
  expect(parseDuration("ttl", "525600m", 365)).toBe(365 * 86_400_000);
  for (const bad of ["0d", "5", "1w", "-3h", "soon", "9999999999d"]) {
    expect(() => parseDuration("ttl", bad, 365)).toThrow("--ttl must look like 45m, 12h or 30d");
  }
  for (const over of ["366d", "8761h", "525601m", "99999999d"]) {
    expect(() => parseDuration("ttl", over, 365)).toThrow("--ttl is at most 365d");
  }
});

test("requireFlag returns the value or a usage error naming the flag", () => {
  const args = parseArgs(["--name", "bot", "--flag"]);
  expect(requireFlag(args, "name")).toBe("bot");
  for (const missing of ["flag", "other"]) {
    let error: unknown;
    try {
      requireFlag(args, missing);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(EXIT_USAGE);
    expect((error as CliError).message).toBe(`--${missing} is required`);
  }
});

test("wholeNumberFlag takes decimal digits only, within its bounds", () => {
  expect(wholeNumberFlag("limit", "16", 100)).toBe(16);
  expect(wholeNumberFlag("limit", "016", 100)).toBe(16);
  for (const bad of ["0x10", "1e1", "+3", "3.0", "0b11", " 5", "", "0", "101", true]) {
    expect(() => wholeNumberFlag("limit", bad, 100)).toThrow(
      "--limit must be a whole number from 1 to 100",
    );
  }
});

test("audit:tail --limit and usage:show --day refuse other spellings and days that do not exist", async () => {
  const dir = tempDir();
  try {
    const env = { DATABASE_PATH: join(dir.path, "cli.db") };
    expect((await cliInProcess(["db:migrate"], env)).code).toBe(0);
    for (const args of [
      ["audit:tail", "--limit", "0x10"],
      ["audit:top", "--limit", "1e1"],
      ["usage:show", "--day", "2026-02-30"],
      ["usage:reset", "--principal", "user:x", "--day", "2026-11-31"],
    ]) {
      const result = await cliInProcess(args, env);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr.split("\n")).toHaveLength(1);
    }
    expect((await cliInProcess(["audit:tail", "--limit", "16"], env)).code).toBe(0);
    expect((await cliInProcess(["usage:show", "--day", "2026-02-28"], env)).code).toBe(0);
  } finally {
    dir.remove();
  }
});
