/**
 * Runs an operator command in process, as `bun run cli` runs it: the same runner and command list,
 * the output collected. Faster than a child process, and what the coverage gate sees; a few tests
 * still spawn the real entry point (test/cli/cli.test.ts).
 */
import { COMMANDS } from "../../src/cli/commands";
import { runCli } from "../../src/cli/run";

export interface CliResult {
  code: number;
  /** The lines printed, joined with newlines (no trailing newline). */
  stdout: string;
  stderr: string;
}

export async function cliInProcess(
  args: readonly string[],
  env: Record<string, string | undefined>,
  stdin = "",
): Promise<CliResult> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    env,
    { out: (line) => out.push(line), err: (line) => err.push(line), readStdin: async () => stdin },
    COMMANDS,
  );
  return { code, stdout: out.join("\n"), stderr: err.join("\n") };
}
