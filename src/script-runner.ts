/**
 * @module
 * A service started with `bun run start` is the child of that `bun run`. A stop signal sent to
 * the `bun run` reaches the service too; SIGKILL (a supervisor's last resort once its stop timeout
 * has passed, `kill -9` of the pid it started) ends the `bun run` alone, and the service went on
 * serving, orphaned, holding its port and its share of the database, while the supervisor started
 * another (a leftover noted since stop 64). So a service whose parent is the package script
 * runner stops, as on SIGTERM, once that parent is gone.
 *
 * Only then: started by a supervisor, a container runtime or a shell directly, its parent may go
 * without meaning a stop (`nohup … &` from a shell that then exits).
 */

/** How often the parent is looked at: a second, as the blocks are reloaded. */
export const PARENT_CHECK_MS = 1_000;

export interface ScriptRunnerWatch {
  stop(): void;
}

/**
 * Calls `onGone` once when the process that ran this one as a package script (`bun run start`:
 * `npm_lifecycle_event` set, and the parent's command line `bun run <script>`) has exited; null
 * when this process was not started so.
 */
export function watchScriptRunner(options: {
  env: Record<string, string | undefined>;
  parentId: () => number;
  /** The parent's command line as `/proc/<pid>/cmdline` holds it (NUL-separated), or null. */
  commandLineOf: (pid: number) => string | null;
  onGone: (parent: number) => void;
  intervalMs?: number;
}): ScriptRunnerWatch | null {
  const script = options.env.npm_lifecycle_event;
  if (script === undefined || script === "") return null;
  const parent = options.parentId();
  const words = options.commandLineOf(parent)?.split("\0") ?? [];
  // `bun run start`, `/usr/local/bin/bun --smol run start`: Bun, then `run` and the script.
  const runner = words.indexOf("run");
  if (!/(^|\/)bun$/.test(words[0] ?? "") || runner < 1 || words[runner + 1] !== script) return null;
  const timer = setInterval(() => {
    if (options.parentId() === parent) return;
    clearInterval(timer);
    options.onGone(parent);
  }, options.intervalMs ?? PARENT_CHECK_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
