/** `bun run cli <command>`: the operator's entry point. */
import { COMMANDS } from "./commands";
import { runCli } from "./run";

const code = await runCli(
  process.argv.slice(2),
  process.env,
  {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    readStdin: () => Bun.stdin.text(),
  },
  COMMANDS,
);
process.exit(code);
