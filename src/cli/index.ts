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
// Output that could not be written (a full disk, not a reader gone) is a failed command: what it
// printed may be cut, or lost whole (the key `keys:create` shows once).
if (out.failed !== null) {
  err.line(`palisade: the output could not be written (${out.failed}): it may be cut or missing`);
  await err.drained();
  code = code === 0 ? 1 : code;
}
process.exit(code);
