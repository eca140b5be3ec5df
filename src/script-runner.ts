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
 * exited; null when this process was not started so. A runner killed before the first look (the
 * service's modules load first, ~0.2 s) leaves this process adopted by init: with Bun's runner
 * named in the environment (`npm_config_user_agent`) and init for a parent, it is taken as gone
 * at once (probe 81c F2: killed in the first half second, the service went on serving).
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
  if (!runsScript(options.commandLineOf(parent), script)) {
    const startedByBun = options.env.npm_config_user_agent?.startsWith("bun/") === true;
    // A script that puts the service in the background (`bun src/index.ts &`, `nohup …`) ends
    // while it runs, as meant: its service was never the runner's to stop with it.
    const backgrounds = BACKGROUNDING.test(options.env.npm_lifecycle_script ?? "");
    if (parent !== INIT || !startedByBun || backgrounds) return null;
    options.onGone(parent);
    return { stop: () => {} };
  }
  const timer = setInterval(() => {
    if (options.parentId() === parent) return;
    clearInterval(timer);
    options.onGone(parent);
  }, options.intervalMs ?? PARENT_CHECK_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/** The process every orphan without a nearer subreaper is given to. */
const INIT = 1;

/** A lone `&` (not `&&`, nor a redirection's `2>&1`, `&>`), or a command that detaches. */
const BACKGROUNDING = /(^|[^&>])&(?![&>])|\b(nohup|setsid|disown|daemon(ize)?)\b/;

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
