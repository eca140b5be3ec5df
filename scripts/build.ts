/**
 * @module
 * `bun run build [outdir]`: the service compiled ahead of time into one executable,
 * `dist/palisade` (or `outdir/palisade`), for production (`bun run start:dist`, the Dockerfile).
 * It holds the Bun runtime, the bundled code as bytecode (a start neither transpiles ~1,700 modules
 * nor parses them), its source map (stack traces in logs and Sentry name the source lines), the
 * migrations and the default FAQ: it reads no file of the source tree and needs no `node_modules`.
 * What the source loads on first use (zxcvbn, openai, stripe, @sentry, jose, the OpenAPI
 * generator) stays in chunks of its own inside it, loaded then. Like `bun run start`, it reads a
 * `.env` file from its working directory.
 *
 * `{ compile: false }` writes the same bundle as plain files (`index.js` and its chunks) instead:
 * what the executable holds, for reading (test/startup/bundle.test.ts checks the chunks).
 */
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = join(import.meta.dir, "..");
export const EXECUTABLE = "palisade";

export async function buildBundle(
  outdir: string,
  { compile = true }: { compile?: boolean } = {},
): Promise<string[]> {
  rmSync(outdir, { recursive: true, force: true });
  const common = {
    entrypoints: [join(ROOT, "src/index.ts")],
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
        // A `.env` in the working directory is read, as `bun run start` reads it; a `bunfig.toml`
        // there is not (its `preload` would run code the build never saw).
        compile: { outfile: join(outdir, EXECUTABLE), autoloadDotenv: true, autoloadBunfig: false },
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
