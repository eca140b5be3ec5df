/**
 * A full filesystem said as that: a start on a full disk was told its healthy database "is not a
 * usable SQLite database: disk I/O error" (probe 83c F6), and a backup into a full directory was
 * told it could not read DATABASE_PATH (F7). On a small tmpfs, so where mounting one is not
 * allowed (not root, no CAP_SYS_ADMIN) the tests are skipped.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fullFilesystem } from "../../src/db/disk-space";
import { cliInProcess } from "../support/cli";
import { runToExit } from "../support/process";

const root = mkdtempSync(join(tmpdir(), "palisade-full-"));
const tiny = join(root, "tiny");
mkdirSync(tiny);
const mounted = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", tiny]).success;
// Bytes to spare, few files.
const few = join(root, "few");
mkdirSync(few);
const fewMounted =
  mounted &&
  Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=16m,nr_inodes=16", "tmpfs", few]).success;

/** A database made at `path` by `db:migrate` in a process of its own, left at rest (no -wal). */
async function madeAtRest(path: string): Promise<boolean> {
  const made = await runToExit(["bun", "run", "src/cli/index.ts", "db:migrate"], {
    DATABASE_PATH: path,
  });
  return made.code === 0 && !existsSync(`${path}-wal`);
}

function fill(): void {
  Bun.spawnSync(["dd", "if=/dev/zero", `of=${join(tiny, "filler")}`, "bs=64k"]);
}
function unfill(): void {
  rmSync(join(tiny, "filler"), { force: true });
}

afterAll(() => {
  // Lazily: a connection of an in-process command may still hold a file there.
  if (mounted) Bun.spawnSync(["umount", "-l", tiny]);
  if (fewMounted) Bun.spawnSync(["umount", "-l", few]);
  rmSync(root, { recursive: true, force: true });
});

test("fullFilesystem: only a failed write's codes, only where little room is left", () => {
  const none = () => ({ bytes: 0, files: 1000 });
  const room = () => ({ bytes: 64 * 1024 * 1024, files: 1000 });
  const noInodes = () => ({ bytes: 64 * 1024 * 1024, files: 0 });
  expect(fullFilesystem("SQLITE_IOERR_WRITE", "/data", none)).toBe(
    "the filesystem that holds /data is full (0 KB free)",
  );
  expect(fullFilesystem("SQLITE_FULL", "/data", none)).not.toBeNull();
  expect(fullFilesystem("SQLITE_IOERR", "/data", room)).toBeNull();
  expect(fullFilesystem("SQLITE_CORRUPT", "/data", none)).toBeNull();
  expect(fullFilesystem("SQLITE_NOTADB", "/data", noInodes)).toBeNull();
  // Out of inodes: a -wal that cannot be made is "unable to open database file".
  expect(fullFilesystem("SQLITE_CANTOPEN", "/data", noInodes)).toBe(
    "the filesystem that holds /data has no room for another file (no free inodes)",
  );
  expect(fullFilesystem("SQLITE_CANTOPEN", "/data", room)).toBeNull();
  expect(
    fullFilesystem("SQLITE_FULL", "/data", () => {
      throw new Error("ENOENT");
    }),
  ).toBeNull();
});

describe.skipIf(!mounted)("on a full tmpfs", () => {
  beforeAll(() => unfill());

  test("db:backup into a full directory names the copy's filesystem, not DATABASE_PATH, and leaves nothing there", async () => {
    const source = join(root, "app.db");
    const env = { DATABASE_PATH: source };
    expect((await cliInProcess(["users:create", "--email", "full@example.test"], env)).code).toBe(
      0,
    );
    // A database larger than the room where the copy goes (4 MB): SQLite fills it, then fails.
    const sqlite = new Database(source);
    sqlite.run(
      "INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at) VALUES ('c-big', 'user', 'u', 0, 0)",
    );
    sqlite.run(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
       INSERT INTO chat_messages (conversation_id, role, content, tokens, created_at)
       SELECT 'c-big', 'user', hex(randomblob(1500)), 1, i FROM n`,
    );
    sqlite.close();
    const copy = join(tiny, "backup.db");
    const result = await cliInProcess(["db:backup", copy], env);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`the filesystem that holds ${tiny} is full`);
    expect(result.stderr).not.toContain("cannot read DATABASE_PATH");
    // Nothing of the copy left behind, its journal neither (probe 83e F4).
    expect(readdirSync(tiny)).toEqual([]);
  });

  test("a start on a full disk says the disk is full, not that the database is unusable", async () => {
    const path = join(tiny, "app.db");
    // Made by a process of its own, which checkpoints and removes its -wal as it closes: a
    // healthy file at rest (the -wal removed under a connection still open would lose its pages).
    expect(await madeAtRest(path)).toBe(true);
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

describe.skipIf(!fewMounted)("on a tmpfs out of inodes", () => {
  test("a start says there is no room for another file, not that the database is unusable (probe 83e F3)", async () => {
    const path = join(few, "app.db");
    expect(await madeAtRest(path)).toBe(true);
    // Every inode left taken (the bytes to spare).
    for (let i = 0; ; i++) {
      try {
        writeFileSync(join(few, `f${i}`), "");
      } catch {
        break;
      }
    }
    const start = await runToExit(["bun", "run", "src/index.ts"], { DATABASE_PATH: path });
    expect(start.code).toBe(2);
    expect(start.stderr).toContain(`the filesystem that holds ${few} has no room for another file`);
    expect(start.stderr).not.toContain("is not a usable SQLite database");
  });
});
