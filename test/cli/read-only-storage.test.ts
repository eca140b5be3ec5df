/**
 * A database on read-only storage, as an evidence copy on a read-only mount: neither the file nor
 * its directory can be written (probe 43c F4). Made so with the immutable flag where this process
 * may set it (root, as here and on CI machines): open() for writing then fails with EPERM, which
 * SQLite meets as it meets a read-only mount's EROFS ("unable to open database file", where EACCES
 * reads as read-only). Elsewhere with modes (0444, 0555), and as root without the flag by running
 * the commands as `nobody` (uid 65534): EACCES.
 */
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../support/app";
import { REPO_ROOT, runToExit } from "../support/process";

const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;
const SECRETS = {
  AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC",
  JWT_SECRET_KEY: "k3J9xQ2mP7vL4nR8tW1yZ6bC5dF0gH3j",
  CSRF_SECRET_KEY: "9Oud1KKpzyCWu6VCba0vvJNF7LxfbdFw",
};

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const step of cleanup.reverse()) step();
  cleanup = [];
});

/**
 * A database of one account in `storage/palisade.db`, and a directory anyone may write
 * (`out/`, for a backup and the runs' HOME).
 */
async function evidence(): Promise<{ root: string; storage: string; path: string; out: string }> {
  const dir = tempDir("palisade-readonly-");
  const root = dir.path;
  const storage = join(root, "storage");
  const out = join(root, "out");
  mkdirSync(storage);
  mkdirSync(out);
  const path = join(storage, "palisade.db");
  // In a process of its own, which closes the file: at rest, with no -wal or -shm beside it.
  const made = await runToExit(
    [
      "bun",
      "src/cli/index.ts",
      "users:create",
      "--email",
      "evidence@example.test",
      "--password-stdin",
    ],
    { ...SECRETS, DATABASE_PATH: path },
    "Corr3ct-Horse-Battery-Staple-99\n",
  );
  expect(made.code).toBe(0);
  chmodSync(root, 0o755);
  chmodSync(out, 0o777);
  cleanup.push(() => {
    chmodSync(storage, 0o755);
    dir.remove();
  });
  return { root, storage, path, out };
}

interface Unwritable {
  /** What open() for writing fails with, as the line names it. */
  errno: "EPERM" | "EACCES";
  /** What SQLite said when the start or a command opened the file. */
  sqlite: string;
  /** The user the commands run as: null for this process's. */
  uid: number | null;
}

/**
 * `paths` made unwritable: immutable when this process may set the flag (always cleared after the
 * test), else by modes. `owned` stays writable by the reader (a file in an unwritable directory).
 */
function unwritable(paths: string[], owned: string[] = []): Unwritable {
  cleanup.push(() => spawnSync("chattr", ["-i", ...paths]));
  if (spawnSync("chattr", ["+i", ...paths]).status === 0) {
    return { errno: "EPERM", sqlite: "unable to open database file", uid: null };
  }
  for (const path of paths) chmodSync(path, statSync(path).isDirectory() ? 0o555 : 0o444);
  if (asRoot) for (const path of owned) chownSync(path, NOBODY, NOBODY);
  return {
    errno: "EACCES",
    sqlite: "attempt to write a readonly database",
    uid: asRoot ? NOBODY : null,
  };
}

/** Runs `bun ARGS` from the repository as the reader `unwritable` chose. */
function runAsReader(
  reader: Unwritable,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? "", ...SECRETS, LOG_LEVEL: "warn", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      ...(reader.uid === null ? {} : { uid: reader.uid, gid: reader.uid }),
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe("a database on read-only storage (probe 43c F4)", () => {
  // With the directory writable too, SQLite made a -wal and a 32 KiB -shm beside the file before
  // its write failed, and left them there (probe 45a F5).
  test.each([
    ["the file and its directory", true],
    ["the file, its directory writable", false],
  ])(
    "%s unwritable: every command and the start say it is read-only, in the documented line, and make nothing beside it",
    async (_, directoryToo) => {
      const { storage, path, out } = await evidence();
      const reader = unwritable(directoryToo ? [path, storage] : [path]);
      const env = { DATABASE_PATH: path, HOME: out };
      const said = `DATABASE_PATH ${path} is read-only (writing it: ${reader.errno}): Palisade and its commands write to it; use a writable copy`;
      const commands: [string, string[]][] = [
        ["users:list", []],
        ["keys:list", []],
        ["audit:verify", []],
        ["db:migrate", []],
        ["users:create", ["--email", "other@example.test"]],
      ];
      const runs = await Promise.all(
        commands.map(([command, rest]) =>
          runAsReader(reader, ["src/cli/index.ts", command, ...rest], env),
        ),
      );
      runs.forEach((run, index) => {
        expect(run.stderr.trim()).toBe(`palisade ${commands[index]![0]}: ${said}`);
        expect(run.code).toBe(1);
      });
      const start = await runAsReader(reader, ["src/index.ts"], { ...env, PORT: "0" });
      expect(start.stderr.trim().split("\n").at(-1)).toBe(`palisade: ${said}`);
      expect(start.code).toBe(2);
      expect(readdirSync(storage)).toEqual(["palisade.db"]);
    },
    30_000,
  );

  test("db:backup copies it as db:verify reads it, making nothing beside it", async () => {
    const { storage, path, out } = await evidence();
    const reader = unwritable([path, storage]);
    const target = join(out, "copy.db");
    const env = { DATABASE_PATH: path, HOME: out };
    const backup = await runAsReader(reader, ["src/cli/index.ts", "db:backup", target], env);
    expect(backup.stderr).toBe("");
    expect(backup.stdout).toStartWith(
      `backup written to ${target}: integrity ok, audit chain intact (`,
    );
    expect(backup.code).toBe(0);
    const copy = new Database(target, { readonly: true });
    try {
      expect(copy.query("SELECT email FROM users").values()).toEqual([["evidence@example.test"]]);
    } finally {
      copy.close();
    }
    const verify = await runAsReader(reader, ["src/cli/index.ts", "db:verify"], env);
    expect(verify.code).toBe(0);
    expect(readdirSync(storage)).toEqual(["palisade.db"]);
  }, 30_000);

  test("a writable file in a directory that cannot be written is said to be so", async () => {
    const { storage, path, out } = await evidence();
    const reader = unwritable([storage], [path]);
    const run = await runAsReader(reader, ["src/cli/index.ts", "users:list"], {
      DATABASE_PATH: path,
      HOME: out,
    });
    const sqlite =
      reader.errno === "EPERM" ? reader.sqlite : "attempt to write a readonly database";
    expect(run.stderr.trim()).toBe(
      `palisade users:list: DATABASE_PATH ${path} is in a directory that cannot be written (${sqlite}; writing ${storage}: ${reader.errno}): SQLite makes its -wal and -shm beside the file; make the directory writable, or use a copy in one that is`,
    );
    expect(run.code).toBe(1);
    expect(readdirSync(storage)).toEqual(["palisade.db"]);
  }, 30_000);
});
