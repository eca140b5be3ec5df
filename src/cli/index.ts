/** `bun run cli <command>`: the operator's entry point. */
import { COMMANDS } from "./commands";
import { lineWriter } from "./output";
import { runCli } from "./run";

const out = lineWriter(Bun.stdout.writer());
const err = lineWriter(Bun.stderr.writer());
let code = 1;
try {
  code = await runCli(
    process.argv.slice(2),
    process.env,
    {
      out: (line) => out.line(line),
      err: (line) => err.line(line),
      readStdin: () => Bun.stdin.text(),
    },
    COMMANDS,
  );
} finally {
  // Every line taken by the reader before the exit (output.ts).
  await Promise.all([out.drained(), err.drained()]);
}
process.exit(code);
