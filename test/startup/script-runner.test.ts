/**
 * `bun run start` killed with SIGKILL (a supervisor's last resort) left the service it started
 * serving, orphaned, on its port; a service started by the package script runner now stops, as
 * on SIGTERM, once that runner is gone. One started otherwise is left alone by its parent's exit.
 */
import { afterEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { watchScriptRunner } from "../../src/script-runner";
import { tempDir } from "../support/app";
import { startService } from "../support/process";

let dir: ReturnType<typeof tempDir> | null = null;
afterEach(() => {
  dir?.remove();
  dir = null;
});

/** The pid of `parent`'s one child process. */
function childOf(parent: number): number {
  const children = readFileSync(`/proc/${parent}/task/${parent}/children`, "utf8").trim();
  expect(children.split(" ")).toHaveLength(1);
  return Number(children);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test("`bun run start` killed with SIGKILL: the service it started stops, draining, and frees its port", async () => {
  dir = tempDir();
  const service = await startService({ DATABASE_PATH: join(dir.path, "runner.db") }, 30_000, {
    command: ["bun", "run", "start"],
  });
  const runner = service.proc.pid;
  const child = childOf(runner);
  expect((await fetch(new URL("/health", service.url))).status).toBe(200);
  process.kill(runner, "SIGKILL");
  await service.proc.exited;
  const deadline = Date.now() + 10_000;
  while (alive(child) && Date.now() < deadline) await Bun.sleep(50);
  expect(alive(child)).toBe(false);
  // Its own graceful stop, not a kill: the line says why, and the port is free again.
  expect(service.stdout()).toContain("the `bun run` that started this service has exited");
  expect(service.stdout()).toContain("shutdown complete");
  await expect(fetch(new URL("/health", service.url))).rejects.toThrow();
}, 40_000);

test("only a parent that is `bun run <the script>` is watched", () => {
  const watched = (env: Record<string, string>, commandLine: string | null) => {
    const watch = watchScriptRunner({
      env,
      parentId: () => 4242,
      commandLineOf: (pid) => (pid === 4242 ? commandLine : null),
      onGone: () => {},
    });
    watch?.stop();
    return watch !== null;
  };
  const script = { npm_lifecycle_event: "start" };
  expect(watched(script, "bun\0run\0start\0")).toBe(true);
  expect(watched(script, "/usr/local/bin/bun\0--smol\0run\0start\0")).toBe(true);
  // Flags after `run` (probe 81c F3).
  expect(watched(script, "bun\0run\0--silent\0start\0")).toBe(true);
  expect(watched(script, "bun\0run\0--watch\0--bun\0start\0")).toBe(true);
  // Not started by a package script, or by another program: a parent's exit means nothing.
  expect(watched({}, "bun\0run\0start\0")).toBe(false);
  expect(watched(script, "/usr/lib/systemd/systemd\0--user\0")).toBe(false);
  expect(watched(script, "bun\0run\0test\0")).toBe(false);
  expect(watched(script, "bun\0test\0")).toBe(false);
  expect(watched(script, "bunny\0run\0start\0")).toBe(false);
  expect(watched(script, null)).toBe(false);
});

test("a parent already adopted by init (the runner killed before the first look) is not taken for a runner killed: a launcher may have put the service in the background on purpose (probe 81e F2)", () => {
  const watch = watchScriptRunner({
    env: {
      npm_lifecycle_event: "start",
      npm_config_user_agent: "bun/1.4.5 npm/? node/v24.3.0 linux x64",
    },
    parentId: () => 1,
    commandLineOf: () => "/sbin/init\0",
    onGone: () => {
      throw new Error("not gone");
    },
  });
  expect(watch).toBeNull();
});

test("the watch calls once, when the parent's id changes (the orphan is adopted)", async () => {
  let parent = 4242;
  const gone: number[] = [];
  const watch = watchScriptRunner({
    env: { npm_lifecycle_event: "start" },
    parentId: () => parent,
    commandLineOf: () => "bun\0run\0start\0",
    onGone: (was) => gone.push(was),
    intervalMs: 10,
  });
  await Bun.sleep(50);
  expect(gone).toEqual([]);
  parent = 1;
  await Bun.sleep(50);
  expect(gone).toEqual([4242]);
  watch?.stop();
});
