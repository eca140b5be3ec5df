/**
 * @module
 * `bun run build [outdir]`: the service compiled ahead of time into one executable,
 * `dist/palisade` (or `outdir/palisade`), for production (`bun run start:dist`, the Dockerfile).
 * It holds the Bun runtime, the bundled code as bytecode (a start neither transpiles ~1,700 modules
 * nor parses them), its source map (stack traces in logs and Sentry name the source lines), the
 * migrations and the default FAQ: it reads no file of the source tree and needs no `node_modules`.
 * What the source loads on first use (zxcvbn, openai, stripe, @sentry, jose, the OpenAPI
 * generator) stays in chunks of its own inside it, loaded then. It takes its settings from the
 * environment only (no `.env`, no `bunfig.toml`), and a start naming no `APP_ENV` is a production
 * start (src/index.ts). Nothing in `outdir` is deleted: what the build writes is overwritten.
 *
 * `{ compile: false }` writes the same bundle as plain files (`index.js` and its chunks) instead:
 * what the executable holds, for reading (test/startup/bundle.test.ts checks the chunks).
 */
import { join, resolve } from "node:path";

const ROOT = join(import.meta.dir, "..");
export const EXECUTABLE = "palisade";

export async function buildBundle(
  outdir: string,
  { compile = true }: { compile?: boolean } = {},
): Promise<string[]> {
  const common = {
    // The background checkpointer's thread (db/background-checkpoint) is an entry point of its own:
    // a Worker's script must be one for the executable to hold it.
    entrypoints: [join(ROOT, "src/index.ts"), join(ROOT, "src/db/checkpoint-worker.ts")],
    target: "bun" as const,
    format: "esm" as const,
    // Not minified: Elysia decides what each handler and hook needs parsed by reading its source
    // text (Sucrose), and fails on minified text (it then prints a non-JSON line to stdout and
    // parses everything for that route). Minifying measured no faster start here.
    minify: false,
    splitting: true,
    sourcemap: "linked" as const,
  };
  const result = compile
    ? await Bun.build({
        ...common,
        // Nothing from the working directory: a `.env` there (Bun would read one from wherever the
        // executable is started, where `bun run start` reads the project's) could hand anyone who
        // can write a file there an admin API key or an upstream's secret, and a `bunfig.toml`'s
        // `preload` would run code the build never saw. Settings come from the environment.
        compile: {
          outfile: join(outdir, EXECUTABLE),
          autoloadDotenv: false,
          autoloadBunfig: false,
        },
        define: { PALISADE_EXECUTABLE: "true" },
        bytecode: true,
      })
    : await Bun.build({ ...common, outdir });
  if (!result.success) {
    throw new AggregateError(result.logs, "bun build failed");
  }
  return result.outputs.map((output) => output.path);
}

if (import.meta.main) {
  const outdir = resolve(process.argv[2] ?? join(ROOT, "dist"));
  await buildBundle(outdir);
  process.stdout.write(`built ${join(outdir, EXECUTABLE)}\n`);
}
