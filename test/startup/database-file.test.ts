/**
 * The database file deleted, moved or replaced while the service runs: the open handle goes on
 * answering, so nothing failed and nothing was said, and the next start made a new empty database
 * without a word (probe 83c F3). Now `/ready` is 503 naming the file, an error line says so within
 * a second, and a start that makes the database says it did.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, renameSync, rmSync, statSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../support/app";
import { type ServiceProcess, startService } from "../support/process";
import { waitFor } from "../support/wait";

// A service a failed assertion left running is stopped all the same (it outlived the test run).
const running: ServiceProcess[] = [];
afterEach(() => {
  for (const service of running.splice(0)) service.proc.kill("SIGKILL");
});

async function started(env: Record<string, string>): Promise<ServiceProcess> {
  const service = await startService(env);
  running.push(service);
  return service;
}

const MADE_NEW = "no database at DATABASE_PATH: a new empty one was made";

async function ready(url: URL) {
  const response = await fetch(new URL("/ready", url));
  const body = (await response.json()) as {
    checks: { database: { status: string; error?: string } };
  };
  return { status: response.status, database: body.checks.database };
}

describe("DATABASE_PATH no longer naming the open database", () => {
  test("deleted while serving: /ready 503 and an error line; the next start says it made a new one, and only then", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "app.db");
      const first = await started({ DATABASE_PATH: path });
      expect(first.stdout()).toContain(MADE_NEW);
      expect((await ready(first.url)).status).toBe(200);
      await first.stop();

      const second = await started({ DATABASE_PATH: path });
      expect(second.stdout()).not.toContain(MADE_NEW);
      expect((await ready(second.url)).status).toBe(200);
      for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
      const after = await ready(second.url);
      expect(after.status).toBe(503);
      expect(after.database).toMatchObject({ status: "down" });
      expect(after.database.error).toStartWith(
        "DATABASE_PATH no longer names a file: the database this process has open was deleted or moved",
      );
      await waitFor(() => second.stdout().includes("DATABASE_PATH no longer names a file"), {
        what: "the error line",
        timeoutMs: 5_000,
      });
      expect(
        second
          .stdout()
          .split("\n")
          .filter((line) => line.includes("DATABASE_PATH no longer names a file")),
      ).toEqual([expect.stringContaining('"level":"error"')]);
      await second.stop();

      const third = await started({ DATABASE_PATH: path });
      expect(third.stdout()).toContain(MADE_NEW);
      await third.stop();
    } finally {
      dir.remove();
    }
  }, 30_000);

  test("replaced while serving, or its -wal deleted: /ready 503 naming which", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "app.db");
      const service = await started({ DATABASE_PATH: path });
      expect((await ready(service.url)).status).toBe(200);
      // Its -wal deleted (another process then makes a new one: deleted or not, not this one's).
      rmSync(`${path}-wal`);
      const walGone = await ready(service.url);
      expect(walGone.status).toBe(503);
      expect(walGone.database.error).toStartWith(
        "the database's -wal file was deleted or replaced while the service ran",
      );
      // A copy put in its place: another file.
      copyFileSync(path, `${path}.copy`);
      renameSync(`${path}.copy`, path);
      const replaced = await ready(service.url);
      expect(replaced.status).toBe(503);
      expect(replaced.database.error).toStartWith(
        "DATABASE_PATH names another file than the database this process has open",
      );
      await service.stop();
    } finally {
      dir.remove();
    }
  }, 30_000);
});

describe("DATABASE_PATH a symbolic link (probe 83e F1)", () => {
  test("to a database on another disk: ready, its -wal and -shm looked for beside the file the link names", async () => {
    const dir = tempDir();
    try {
      const bigger = join(dir.path, "bigger");
      mkdirSync(bigger);
      const target = join(bigger, "palisade.db");
      const link = join(dir.path, "palisade.db");
      // Linked before its first start, to a file not made yet: made there, owner-only.
      symlinkSync(target, link);
      const first = await started({ DATABASE_PATH: link });
      expect((await ready(first.url)).status).toBe(200);
      expect(statSync(target).mode & 0o777).toBe(0o600);
      await first.stop();
      const second = await started({ DATABASE_PATH: link });
      await Bun.sleep(1_500);
      expect(await ready(second.url)).toMatchObject({ status: 200, database: { status: "up" } });
      expect(second.stdout()).not.toContain("was deleted or replaced");
      // Its -wal deleted where it is: said.
      rmSync(`${target}-wal`);
      expect((await ready(second.url)).database.error).toStartWith(
        "the database's -wal file was deleted or replaced",
      );
      await second.stop();
    } finally {
      dir.remove();
    }
  }, 30_000);
});
