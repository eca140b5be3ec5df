import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../support/app";
import { STRONG_PASSWORD } from "../support/auth";
import { cliInProcess } from "../support/cli";
import {
  makeOthersFiles,
  makeOthersWalFile,
  makeStoppedFirstStart,
  OTHERS_FILES,
} from "../support/database-files";

let cleanup: (() => void) | null = null;
afterEach(() => {
  cleanup?.();
  cleanup = null;
});

function workspace() {
  const dir = tempDir();
  cleanup = dir.remove;
  const env = { DATABASE_PATH: join(dir.path, "cli.db") };
  // In process, as `bun run cli` runs it (test/cli/cli.test.ts spawns the real entry point).
  const cli = (args: string[], stdin?: string) => cliInProcess(args, env, stdin);
  const query = <T>(sql: string, ...params: string[]) => {
    const db = new Database(env.DATABASE_PATH, { readonly: true });
    try {
      return db.query(sql).all(...params) as T[];
    } finally {
      db.close();
    }
  };
  return { cli, query, path: env.DATABASE_PATH };
}

describe("users", () => {
  test("users:role and users:erase warn when they leave no admin; keys:create --name and blocks:add --reason hold to the API's bounds (probes 35c I3, I4, 36a F4, F8)", async () => {
    const { cli, query } = workspace();
    expect(
      (await cli(["users:create", "--email", "only@example.test", "--role", "admin"])).code,
    ).toBe(0);
    const demoted = await cli(["users:role", "--email", "only@example.test", "--role", "user"]);
    expect(demoted.code).toBe(0);
    expect(demoted.stderr).toContain("no account is an admin now");
    const again = await cli(["users:role", "--email", "only@example.test", "--role", "user"]);
    expect(again.stderr).toBe("");
    const long = await cli(["keys:create", "--name", "k".repeat(101), "--scopes", "chat"]);
    expect(long.code).toBe(2);
    expect(long.stderr).toContain("--name is longer than the API's 100 (UTF-16 units");
    // Erasing the last admin says so too (probe 36a F8).
    expect(
      (await cli(["users:role", "--email", "only@example.test", "--role", "admin"])).code,
    ).toBe(0);
    const erased = await cli(["users:erase", "--email", "only@example.test", "--yes"]);
    expect(erased.code).toBe(0);
    expect(erased.stderr).toContain("no account is an admin now");
    const reason = await cli([
      "blocks:add",
      "--address",
      "203.0.113.4",
      "--ttl",
      "5m",
      "--reason",
      "r".repeat(501),
    ]);
    expect(reason.code).toBe(2);
    expect(reason.stderr).toContain("--reason is longer than the API's 500");
    expect(query("SELECT id FROM api_keys")).toEqual([]);
    expect((await cli(["keys:create", "--name", "k".repeat(100), "--scopes", "chat"])).code).toBe(
      0,
    );
  });

  test("keys:create refuses a name the API refuses, and stores a credential in a name redacted (probes 38a F1, 38c F3)", async () => {
    const { cli, query } = workspace();
    for (const name of ["ops\nsecond line", "rtl \u202Egnp.exe", "nul\u0000", "\u200B"]) {
      const refused = await cli(["keys:create", "--name", name, "--scopes", "chat"]);
      expect({ name, code: refused.code }).toEqual({ name, code: 2 });
      expect(refused.stderr).toContain("--name: Must");
    }
    const live = "pal_live_I8aS7uL8KzBphd6b1mYoolvZmGfWsq3Q0xKm";
    expect(
      (await cli(["keys:create", "--name", `handover ${live}`, "--scopes", "chat"])).code,
    ).toBe(0);
    // The one key made: the refused names made none.
    expect(query<{ name: string }>("SELECT name FROM api_keys")).toEqual([
      { name: "handover [REDACTED]" },
    ]);
  });

  test("users:create makes the first admin with a generated password shown once", async () => {
    const { cli, query } = workspace();
    const result = await cli(["users:create", "--email", "Root@Example.test", "--role", "admin"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("created admin Root@example.test");
    const password = /password \(shown once\): (\S+)/.exec(result.stdout)![1]!;
    expect(password.length).toBeGreaterThanOrEqual(40);
    // No credential's shape: a refresh token's prefix made scanners take it for one (probe 35c I2).
    expect(password).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(password).not.toStartWith("pal_");
    const [row] = query<{ role: string; hash: string }>(
      "SELECT role, password_hash AS hash FROM users",
    );
    expect(row!.role).toBe("admin");
    expect(row!.hash).toStartWith("$argon2id$");
    expect(row!.hash).not.toContain(password);
  });

  test("users:create reads the password from stdin, checks it, and refuses duplicates", async () => {
    const { cli, query } = workspace();
    const weak = await cli(
      ["users:create", "--email", "a@example.test", "--password-stdin"],
      "password\n",
    );
    expect(weak.code).toBe(1);
    expect(weak.stderr.trim()).toStartWith("palisade users:create: the password is refused (");
    expect(weak.stderr).not.toContain("password\n");
    const ok = await cli(
      ["users:create", "--email", "a@example.test", "--password-stdin"],
      `${STRONG_PASSWORD}\n`,
    );
    expect(ok.code).toBe(0);
    expect(ok.stdout).not.toContain("shown once");
    // However many line endings end it, they are the pipe's (probe 86d F4); one inside is refused.
    const twoLines = await cli(
      ["users:create", "--email", "two@example.test", "--password-stdin"],
      `${STRONG_PASSWORD}\nsecond line\n`,
    );
    expect(twoLines.code).toBe(1);
    expect(twoLines.stderr.trim()).toBe(
      "palisade users:create: the password read from stdin must be one line",
    );
    // Nor a character a sign-in form cannot type (probe 86e F7).
    for (const odd of [
      `${STRONG_PASSWORD}\t`,
      `${STRONG_PASSWORD}\u0085`,
      `x\u2028${STRONG_PASSWORD}`,
      `${STRONG_PASSWORD}\u0000`,
    ]) {
      const refused = await cli(
        ["users:create", "--email", "odd@example.test", "--password-stdin"],
        `${odd}\n`,
      );
      expect({ odd, code: refused.code }).toEqual({ odd, code: 1 });
      expect(refused.stderr).toContain("has a control character or a line separator");
    }
    const blankAfter = await cli(
      ["users:create", "--email", "blank@example.test", "--password-stdin"],
      `${STRONG_PASSWORD}\r\n\n\n`,
    );
    expect(blankAfter.code).toBe(0);
    const [stored] = query<{ hash: string }>(
      "SELECT password_hash AS hash FROM users WHERE email = 'blank@example.test'",
    );
    expect(await Bun.password.verify(STRONG_PASSWORD, stored!.hash)).toBe(true);
    const dup = await cli(
      ["users:create", "--email", "A@example.test", "--password-stdin"],
      `${STRONG_PASSWORD}\n`,
    );
    expect(dup.code).toBe(1);
    expect(dup.stderr.trim()).toBe(
      "palisade users:create: an account with this email already exists",
    );
  });

  test("users:role changes the role; usage errors exit 2 with one line", async () => {
    const { cli, query } = workspace();
    await cli(["users:create", "--email", "b@example.test"]);
    const promoted = await cli(["users:role", "--email", "b@example.test", "--role", "admin"]);
    expect(promoted.code).toBe(0);
    expect(query<{ role: string }>("SELECT role FROM users")[0]!.role).toBe("admin");
    const bad = await cli(["users:role", "--email", "b@example.test", "--role", "root"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe("palisade users:role: --role must be user or admin");
    const missing = await cli(["users:role", "--email", "nobody@example.test", "--role", "user"]);
    expect(missing.code).toBe(1);
    const noEmail = await cli(["users:create"]);
    expect(noEmail.code).toBe(2);
    expect(noEmail.stderr.trim()).toBe("palisade users:create: --email is required");
  });
});

describe("a path that names no file", () => {
  test("config:check and alerts:config open no database and make nothing beside it, not even the development key file; once a start made it, they read it", async () => {
    const dir = tempDir();
    cleanup = dir.remove;
    const path = join(dir.path, "typo", "db.sqlite");
    const env = {
      APP_ENV: "development",
      DATABASE_PATH: path,
      ALERT_EMAIL: "ops@example.org",
      ALERT_SMTP_SMARTHOST: "127.0.0.1:25",
      ALERT_SMTP_FROM: "palisade@example.org",
    };
    const checked = await cliInProcess(["config:check"], env);
    expect(checked.code).toBe(0);
    expect(JSON.parse(checked.stdout).auditSecretKey).toBe(
      `(development key file ${path}.audit-key, not there yet: the first start makes it)`,
    );
    expect((await cliInProcess(["alerts:config"], env)).code).toBe(0);
    expect(existsSync(join(dir.path, "typo"))).toBe(false);
    // A command that opens the database makes the key, as a start does; the others then read it.
    expect((await cliInProcess(["db:migrate"], env)).code).toBe(0);
    expect(existsSync(`${path}.audit-key`)).toBe(true);
    const again = await cliInProcess(["config:check"], env);
    expect(JSON.parse(again.stdout).auditSecretKey).toBe(
      `(development key file ${path}.audit-key)`,
    );
  });

  test("only the commands that make a database make one; the others refuse a missing or never-migrated file, make nothing (no key file either) and exit 1", async () => {
    const dir = tempDir();
    cleanup = dir.remove;
    const path = join(dir.path, "typo", "db.sqlite");
    const env = { DATABASE_PATH: path };
    for (const args of [
      ["users:list"],
      ["keys:list"],
      ["blocks:list"],
      ["audit:tail"],
      ["audit:verify"],
      ["usage:show"],
      ["users:erase", "--email", "a@example.test", "--yes"],
      ["blocks:add", "--address", "203.0.113.9", "--ttl", "2h", "--reason", "x"],
      ["sessions:end", "--all", "--yes"],
      ["db:backup", join(dir.path, "copy.db")],
    ]) {
      const result = await cliInProcess(args, env);
      expect({ args, code: result.code, stdout: result.stdout }).toEqual({
        args,
        code: 1,
        stdout: "",
      });
      expect(result.stderr).toBe(
        `palisade ${args[0]}: DATABASE_PATH ${path} names no file: ${args[0]} reads an existing database and makes none (check the path)`,
      );
      expect(existsSync(join(dir.path, "typo"))).toBe(false);
    }
    // A file that is there but was never Palisade's (empty, another application's): refused too,
    // and left as it was.
    const empty = join(dir.path, "empty.db");
    writeFileSync(empty, "");
    // Another application's, drizzle-made too (it has a migrations table of its own).
    const foreign = join(dir.path, "other.db");
    const other = new Database(foreign);
    other.run("CREATE TABLE notes (body TEXT)");
    other.run(
      "CREATE TABLE __drizzle_migrations (id INTEGER PRIMARY KEY, hash TEXT, created_at NUMERIC)",
    );
    other.close();
    const walFile = makeOthersWalFile(dir.path);
    expect(readdirSync(dir.path).filter((name) => name.startsWith("other app"))).toEqual([
      "other app?#%41.db",
    ]);
    for (const file of [empty, foreign, walFile]) {
      const before = readFileSync(file);
      for (const args of [["users:list"], ["sessions:end", "--all", "--yes"]]) {
        const result = await cliInProcess(args, { DATABASE_PATH: file });
        expect({ args, code: result.code, stdout: result.stdout }).toEqual({
          args,
          code: 1,
          stdout: "",
        });
        const what = file === empty ? "empty" : "another application's tables";
        expect(existsSync(`${file}-wal`) || existsSync(`${file}-shm`)).toBe(false);
        expect(result.stderr).toBe(
          `palisade ${args[0]}: DATABASE_PATH ${file} holds no Palisade database (${what}): ${args[0]} reads an existing one and writes nothing there (check the path)`,
        );
      }
      expect(readFileSync(file).equals(before)).toBe(true);
      expect(existsSync(`${file}.audit-key`)).toBe(false);
    }
    // Palisade's own file whose record of migrations was dropped: altered, not a typo.
    const altered = join(dir.path, "altered.db");
    expect((await cliInProcess(["db:migrate"], { DATABASE_PATH: altered })).code).toBe(0);
    const drop = new Database(altered);
    drop.run("DROP TABLE __drizzle_migrations");
    drop.close();
    const refused = await cliInProcess(["users:list"], { DATABASE_PATH: altered });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(
      `palisade users:list: DATABASE_PATH ${altered} holds Palisade's tables but no record of its migrations: the file was altered; restore it from a backup`,
    );
    const made = await cliInProcess(["users:create", "--email", "root@example.test"], env);
    expect(made.code).toBe(0);
    expect(existsSync(path)).toBe(true);
    expect((await cliInProcess(["users:list"], env)).code).toBe(0);
  });

  test("the commands that make a database refuse another application's file in one line naming DATABASE_PATH, exit 1, and leave it byte for byte with nothing beside it; an empty file is still made a database (probe 43c F2)", async () => {
    const dir = tempDir();
    cleanup = dir.remove;
    const foreign = join(dir.path, "other.db");
    const other = new Database(foreign);
    other.run("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)");
    other.run("INSERT INTO customers (name) VALUES ('Important Co')");
    other.close();
    const walFile = makeOthersWalFile(dir.path);
    const makers = [
      ["db:migrate"],
      ["users:create", "--email", "root@example.test"],
      ["keys:create", "--name", "ci", "--scopes", "chat"],
    ];
    for (const file of [foreign, walFile]) {
      const before = readFileSync(file);
      for (const args of makers) {
        const result = await cliInProcess(args, { DATABASE_PATH: file });
        expect({ args, code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({
          args,
          code: 1,
          stdout: "",
          stderr: `palisade ${args[0]}: DATABASE_PATH ${file} holds no Palisade database (another application's tables): Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)`,
        });
      }
      expect(readFileSync(file).equals(before)).toBe(true);
    }
    expect(readdirSync(dir.path).sort()).toEqual(["other app?#%41.db", "other.db"]);
    // An empty file (touched ahead of the first start) is made a database, as before.
    for (const args of makers) {
      const empty = join(dir.path, `${args[0]!.replace(":", "-")}.db`);
      writeFileSync(empty, "");
      const result = await cliInProcess(args, { DATABASE_PATH: empty });
      expect({ args, code: result.code }).toEqual({ args, code: 0 });
      expect((await cliInProcess(["users:list"], { DATABASE_PATH: empty })).code).toBe(0);
    }
  });
});

describe("a file that is not Palisade's, or not yet", () => {
  const makers = [
    ["db:migrate"],
    ["users:create", "--email", "root@example.test"],
    ["keys:create", "--name", "ci", "--scopes", "chat"],
  ];

  test("a file of another's views or triggers, one its header marks as an application's, and a migrations table not as Palisade's migrator makes it are refused by the commands that make a database and those that read one, exit 1, left byte for byte with nothing beside them (probe 44b F2, F3)", async () => {
    const dir = tempDir();
    cleanup = dir.remove;
    const paths = makeOthersFiles(dir.path);
    for (const [at, file] of paths.entries()) {
      const { holds } = OTHERS_FILES[at]!;
      const before = readFileSync(file);
      for (const args of [...makers, ["users:list"]]) {
        const result = await cliInProcess(args, { DATABASE_PATH: file });
        const refusal =
          args[0] === "users:list"
            ? "users:list reads an existing one and writes nothing there (check the path)"
            : "Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)";
        expect({ args, code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({
          args,
          code: 1,
          stdout: "",
          stderr: `palisade ${args[0]}: DATABASE_PATH ${file} holds no Palisade database (${holds}): ${refusal}`,
        });
      }
      expect(readFileSync(file).equals(before)).toBe(true);
    }
    expect(readdirSync(dir.path).sort()).toEqual(OTHERS_FILES.map((file) => file.name).sort());
  });

  test("a file that is no SQLite database (a YAML file named by mistake) is said to be so by the commands that make a database and those that read one, with no audit key made beside it (probe 45a F4)", async () => {
    const dir = tempDir();
    cleanup = dir.remove;
    for (const [name, content] of [
      ["conf.yaml", "key: value\nother: 1\n"],
      ["tiny.db", "SQLite"],
    ] as const) {
      const file = join(dir.path, name);
      writeFileSync(file, content);
      for (const args of [...makers, ["users:list"], ["keys:list"]]) {
        const result = await cliInProcess(args, { DATABASE_PATH: file });
        expect([args, result.code]).toEqual([args, 1]);
        expect(result.stderr).toStartWith(
          `palisade ${args[0]}: DATABASE_PATH ${file} is not a usable SQLite database: it does not start as one`,
        );
        expect(readFileSync(file, "utf8")).toBe(content);
      }
    }
    expect(readdirSync(dir.path).sort()).toEqual(["conf.yaml", "tiny.db"]);
  });

  test("a path that names a FIFO or a directory is said to be no regular file by the commands that make a database and those that read one, with nothing read or made (probe 46c F5: a FIFO hung them)", async () => {
    const dir = tempDir();
    cleanup = dir.remove;
    const fifo = join(dir.path, "fifo.db");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const directory = join(dir.path, "folder.db");
    mkdirSync(directory);
    for (const [path, kind] of [
      [fifo, "a FIFO"],
      [directory, "a directory"],
    ] as const) {
      for (const args of [...makers, ["users:list"], ["keys:list"], ["db:verify"]]) {
        const result = await cliInProcess(args, { DATABASE_PATH: path });
        expect({ args, code: result.code, stderr: result.stderr }).toEqual({
          args,
          code: 1,
          stderr: `palisade ${args[0]}: DATABASE_PATH ${path} is not a regular file (${kind}): the database is a file (check the path)`,
        });
      }
    }
    expect(readdirSync(dir.path).sort()).toEqual(["fifo.db", "folder.db"]);
    expect(readdirSync(directory)).toEqual([]);
  });

  test("Palisade's file whose first start stopped before its migrations is said to be so by the commands that read one, exit 1, and left as it is; the commands that make a database finish it (probe 44b F4)", async () => {
    const dir = tempDir();
    cleanup = dir.remove;
    const stopped = join(dir.path, "stopped.db");
    makeStoppedFirstStart(stopped);
    const before = readFileSync(stopped);
    for (const args of [
      ["users:list"],
      ["keys:list"],
      ["blocks:list"],
      ["audit:tail"],
      ["audit:verify"],
      ["usage:show"],
      ["sessions:end", "--all", "--yes"],
      ["db:backup", join(dir.path, "copy.db")],
      ["db:verify"],
    ]) {
      const result = await cliInProcess(args, { DATABASE_PATH: stopped });
      expect({ args, code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({
        args,
        code: 1,
        stdout: "",
        stderr: `palisade ${args[0]}: DATABASE_PATH ${stopped} is a Palisade database whose first start stopped before its migrations were done: ${args[0]} reads a migrated one and writes nothing there (start the service or run db:migrate)`,
      });
    }
    expect(readFileSync(stopped).equals(before)).toBe(true);
    expect(readdirSync(dir.path)).toEqual(["stopped.db"]);
    for (const args of makers) {
      const path = join(dir.path, `${args[0]!.replace(":", "-")}.db`);
      makeStoppedFirstStart(path);
      const result = await cliInProcess(args, { DATABASE_PATH: path });
      expect({ args, code: result.code, stderr: result.stderr }).toEqual({
        args,
        code: 0,
        stderr: "",
      });
      expect((await cliInProcess(["db:verify"], { DATABASE_PATH: path })).code).toBe(0);
    }
  });
});

describe("users:list", () => {
  test("lists every account with its id, address and role, oldest first; filters by role; never a hash; says which rows fail their seal", async () => {
    const { cli, query, path } = workspace();
    await cli(["users:create", "--email", "Root@Example.test", "--role", "admin"]);
    await cli(["users:create", "--email", "b@example.test"]);
    const rows = query<{ id: string; email: string; hash: string }>(
      "SELECT id, email, password_hash AS hash FROM users ORDER BY created_at, id",
    );
    const listed = await cli(["users:list"]);
    expect(listed.code).toBe(0);
    const lines = listed.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toStartWith(`${rows[0]!.id}  Root@example.test  admin  created 20`);
    expect(lines[1]).toStartWith(`${rows[1]!.id}  b@example.test  user  created 20`);
    for (const row of rows) expect(listed.stdout).not.toContain(row.hash);
    const admins = await cli(["users:list", "--role", "admin"]);
    expect(admins.stdout.trim().split("\n")).toHaveLength(1);
    const json = await cli(["users:list", "--json"]);
    const parsed = json.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(parsed.map((account) => account.role)).toEqual(["admin", "user"]);
    expect(Object.keys(parsed[0]!).sort()).toEqual([
      "createdAt",
      "email",
      "id",
      "intact",
      "role",
      "setAside",
    ]);
    // A role written into the file: the row no longer matches its seal, and the list says so.
    const db = new Database(path);
    db.run("UPDATE users SET role = 'admin' WHERE email = 'b@example.test'");
    db.close();
    const tampered = await cli(["users:list"]);
    expect(tampered.stdout.trim().split("\n")[1]).toBe(
      `${rows[1]!.id}  b@example.test  admin  created ${/created (\S+)/.exec(lines[1]!)![1]}  refused (does not match its seal, or an erased account's copied back: db:verify says which)`,
    );
    // A creation time written into the file that is no time: shown as unknown, the rest listed.
    const noTime = new Database(path);
    noTime.run("UPDATE users SET created_at = 'yesterday' WHERE email = 'Root@example.test'");
    noTime.close();
    const listedAnyway = await cli(["users:list"]);
    expect(listedAnyway.code).toBe(0);
    expect(listedAnyway.stdout).toContain("Root@example.test  admin  created unknown");
    expect((await cli(["users:list", "--json"])).stdout).toContain('"createdAt":null');
  });
});

describe("keys", () => {
  test("keys:create prints the key once; keys:list shows only prefixes; keys:revoke revokes", async () => {
    const { cli, query } = workspace();
    const created = await cli([
      "keys:create",
      "--name",
      "bot",
      "--scopes",
      "chat,payments",
      "--expires",
      "30d",
    ]);
    expect(created.code).toBe(0);
    const key = /key \(shown once\): (pal_live_\S+)/.exec(created.stdout)![1]!;
    const id = /created key (\S+)/.exec(created.stdout)![1]!;
    const listed = await cli(["keys:list"]);
    expect(listed.stdout).toContain(`${id}  ${key.slice(0, 16)}…  bot  chat,payments  active`);
    expect(listed.stdout).not.toContain(key);
    expect(JSON.stringify(query("SELECT * FROM api_keys"))).not.toContain(key);
    const revoked = await cli(["keys:revoke", id]);
    expect(revoked.code).toBe(0);
    expect((await cli(["keys:list"])).stdout).toContain("revoked");
    expect((await cli(["keys:revoke", id])).code).toBe(1);
  });

  test("keys:list says when a key's lineage or rotation mark was written into the file (probe 19d F2)", async () => {
    const { cli, path } = workspace();
    const made = async (name: string) =>
      /created key (\S+)/.exec(
        (await cli(["keys:create", "--name", name, "--scopes", "payments"])).stdout,
      )![1]!;
    const first = await made("shop-a");
    const second = await made("shop-b");
    const third = await made("shop-c");
    const db = new Database(path);
    db.run("UPDATE api_keys SET lineage = ? WHERE id = ?", [first, second]);
    db.run("UPDATE api_keys SET replaced_by = ? WHERE id = ?", [first, third]);
    db.close();
    const lines = (await cli(["keys:list"])).stdout.split("\n");
    const lineOf = (id: string) => lines.find((line) => line.startsWith(id))!;
    expect(lineOf(second)).toContain("  active  ");
    expect(lineOf(second)).toEndWith(
      "lineage refused (does not match its seal: no payments for a key acting for no user, no rotation)",
    );
    expect(lineOf(third)).toEndWith(
      "rotation mark refused (replaced_by does not match its seal: no rotation)",
    );
    expect(lineOf(first)).not.toContain("refused");
  });

  test("keys:create refuses unknown scopes and bad durations", async () => {
    const { cli } = workspace();
    const scope = await cli(["keys:create", "--name", "x", "--scopes", "chat,root"]);
    expect(scope.code).toBe(2);
    expect(scope.stderr).toContain("unknown scope root");
    const createExpiring = (expires: string) =>
      cli(["keys:create", "--name", "x", "--scopes", "chat", "--expires", expires]);
    const duration = await createExpiring("soon");
    expect(duration.code).toBe(2);
    expect(duration.stderr.trim()).toBe(
      "palisade keys:create: --expires must look like 45m, 12h or 30d",
    );
    // Past the API's bound (3650 days) it is refused before anything is written; keys:list works.
    const far = await createExpiring("99999999d");
    expect(far.code).toBe(2);
    expect(far.stderr.trim()).toBe("palisade keys:create: --expires is at most 3650d");
    const listed = await cli(["keys:list"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).not.toContain(" x ");
    expect(
      (
        await cli(["blocks:add", "--address", "10.8.8.8", "--ttl", "99999999d", "--reason", "x"])
      ).stderr.trim(),
    ).toBe("palisade blocks:add: --ttl is at most 365d");
    expect((await cli(["blocks:list"])).code).toBe(0);
  });
});

describe("blocks", () => {
  test("blocks:add, blocks:list, blocks:remove", async () => {
    const { cli } = workspace();
    expect((await cli(["db:migrate"])).code).toBe(0);
    const added = await cli([
      "blocks:add",
      "--address",
      "203.0.113.9",
      "--ttl",
      "2h",
      "--reason",
      "abuse",
    ]);
    expect(added.code).toBe(0);
    const id = /\(block (\d+)\)/.exec(added.stdout)![1]!;
    const listed = await cli(["blocks:list"]);
    expect(listed.stdout).toContain("203.0.113.9");
    expect(listed.stdout).toContain("admin by cli  abuse");
    expect((await cli(["blocks:remove", id])).code).toBe(0);
    expect((await cli(["blocks:list"])).stdout.trim()).toBe("no active blocks");
    const bad = await cli(["blocks:add", "--address", "nope", "--ttl", "2h", "--reason", "x"]);
    expect(bad.code).toBe(2);
  });
});

test("every command has --help", async () => {
  const { cli } = workspace();
  const help = await cli(["help"]);
  const names = [...help.stdout.matchAll(/^ {2}(\S+:\S+)/gm)].map((m) => m[1]!);
  expect(names).toEqual(
    expect.arrayContaining([
      "users:create",
      "users:role",
      "keys:create",
      "keys:list",
      "keys:revoke",
      "blocks:list",
      "blocks:add",
      "blocks:remove",
      "audit:tail",
      "audit:verify",
    ]),
  );
  for (const name of names) {
    const result = await cli([name, "--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toStartWith(`Usage: bun run cli ${name}`);
  }
});
