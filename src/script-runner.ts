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
 * `npm_lifecycle_event` set, and the parent's command line `bun … run [flags] <that script>`) has
 * exited; null when this process was not started so. The first look is when src/index.ts starts
 * to run (its modules load first, ~0.2 s): a runner killed before it is not seen. Inferring it
 * from being adopted by init, as briefly tried, stopped services a wrapper script or a launcher
 * had put in the background on purpose (probe 81e F2), and missed those a subreaper adopted (F3).
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
  if (!runsScript(options.commandLineOf(parent), script)) return null;
  const timer = setInterval(() => {
    if (options.parentId() === parent) return;
    clearInterval(timer);
    options.onGone(parent);
  }, options.intervalMs ?? PARENT_CHECK_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * Whether a command line is Bun's runner of `script`: Bun, then `run`, its flags, and the script
 * (`bun run start`, `/usr/local/bin/bun --smol run start`, `bun run --silent start`: probe 81c F3).
 */
function runsScript(commandLine: string | null, script: string): boolean {
  const words = commandLine?.split("\0") ?? [];
  if (!/(^|\/)bun$/.test(words[0] ?? "")) return false;
  const run = words.indexOf("run");
  if (run < 1) return false;
  const named = words.slice(run + 1).find((word) => !word.startsWith("-"));
  return named === script;
}
