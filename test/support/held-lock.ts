/**
 * @module
 * A database file locked by another process for a moment, as the last connection to close a file
 * holds it while it checkpoints and removes the WAL: no other connection can read it meanwhile.
 */
import { expect } from "bun:test";
import { REPO_ROOT } from "./process";

/**
 * Migrates the file at `path` in a process that then exits, and runs `script` there on its
 * connection (`sqlite`): a connection closed in the test's own process stays open until its
 * statements are collected, and would keep another process from taking the file.
 */
export function madeByAnotherProcess(path: string, script = ""): void {
  const made = Bun.spawnSync(
    [
      "bun",
      "-e",
      `const { openDatabase } = require("./src/db/client");
       const { applyMigrations } = require("./src/db/migrate");
       const db = openDatabase(process.argv[1]);
       applyMigrations(db);
       const sqlite = db.$client;
       ${script}
       sqlite.close();`,
      path,
    ],
    { cwd: REPO_ROOT, stderr: "inherit" },
  );
  expect(made.exitCode).toBe(0);
}

/** Another process holds the file at `path` locked from when this resolves until `holdMs` later. */
export async function heldLocked(path: string, holdMs: number) {
  const holder = Bun.spawn(
    [
      "bun",
      "-e",
      `const { Database } = require("bun:sqlite");
       const db = new Database(process.argv[1]);
       db.run("PRAGMA locking_mode = EXCLUSIVE");
       db.run("CREATE TABLE IF NOT EXISTS held (x)");
       db.run("INSERT INTO held VALUES (1)");
       console.log("held");
       setTimeout(() => { const at = Date.now(); db.close(); console.log(at); }, ${holdMs});`,
      path,
    ],
    { stdout: "pipe", stderr: "inherit" },
  );
  const reader = holder.stdout.getReader();
  const said = await reader.read();
  expect(new TextDecoder().decode(said.value)).toBe("held\n");
  return {
    /** Just before the holder let the file go (by this machine's clock), once it has exited. */
    async releasedAt(): Promise<number> {
      let rest = "";
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        rest += new TextDecoder().decode(chunk.value);
      }
      expect(await holder.exited).toBe(0);
      return Number(rest.trim());
    },
  };
}
