/**
 * A full filesystem said as that: a start on a full disk was told its healthy database "is not a
 * usable SQLite database: disk I/O error" (probe 83c F6), and a backup into a full directory was
 * told it could not read DATABASE_PATH (F7). On a small tmpfs, so where mounting one is not
 * allowed (not root, no CAP_SYS_ADMIN) the tests are skipped.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fullFilesystem } from "../../src/db/disk-space";
import { cliInProcess } from "../support/cli";
import { runToExit } from "../support/process";

const root = mkdtempSync(join(tmpdir(), "palisade-full-"));
const tiny = join(root, "tiny");
mkdirSync(tiny);
const mounted = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", tiny]).success;

function fill(): void {
  Bun.spawnSync(["dd", "if=/dev/zero", `of=${join(tiny, "filler")}`, "bs=64k"]);
}
function unfill(): void {
  rmSync(join(tiny, "filler"), { force: true });
}

afterAll(() => {
  // Lazily: a connection of an in-process command may still hold a file there.
  if (mounted) Bun.spawnSync(["umount", "-l", tiny]);
  rmSync(root, { recursive: true, force: true });
});

test("fullFilesystem: only a failed write's codes, only where little room is left", () => {
  const none = () => 0;
  const room = () => 64 * 1024 * 1024;
  expect(fullFilesystem("SQLITE_IOERR_WRITE", "/data", none)).toBe(
    "the filesystem that holds /data is full (0 KB free)",
  );
  expect(fullFilesystem("SQLITE_FULL", "/data", none)).not.toBeNull();
  expect(fullFilesystem("SQLITE_IOERR", "/data", room)).toBeNull();
  expect(fullFilesystem("SQLITE_CORRUPT", "/data", none)).toBeNull();
  expect(
    fullFilesystem("SQLITE_FULL", "/data", () => {
      throw new Error("ENOENT");
    }),
  ).toBeNull();
});

describe.skipIf(!mounted)("on a full tmpfs", () => {
  beforeAll(() => unfill());

  test("db:backup into a full directory names the copy's filesystem, not DATABASE_PATH", async () => {
    const source = join(root, "app.db");
    const env = { DATABASE_PATH: source };
    expect((await cliInProcess(["users:create", "--email", "full@example.test"], env)).code).toBe(
      0,
    );
    fill();
    try {
      const copy = join(tiny, "backup.db");
      const result = await cliInProcess(["db:backup", copy], env);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`the filesystem that holds ${tiny} is full`);
      expect(result.stderr).not.toContain("cannot read DATABASE_PATH");
    } finally {
      unfill();
    }
  });

  test("a start on a full disk says the disk is full, not that the database is unusable", async () => {
    const path = join(tiny, "app.db");
    const made = await cliInProcess(["db:migrate"], { DATABASE_PATH: path });
    expect(made.code).toBe(0);
    rmSync(`${path}-wal`, { force: true });
    rmSync(`${path}-shm`, { force: true });
    fill();
    try {
      const start = await runToExit(["bun", "run", "src/index.ts"], { DATABASE_PATH: path });
      expect(start.code).toBe(2);
      expect(start.stderr).toContain(`the filesystem that holds ${tiny} is full`);
      expect(start.stderr).not.toContain("is not a usable SQLite database");
    } finally {
      unfill();
    }
  });
});
