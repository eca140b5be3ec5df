/**
 * @module
 * `bun run build [outdir]`: the service bundled ahead of time into `dist/` (or `outdir`), code-split,
 * for production (`bun run start:dist`, the Dockerfile). A start then parses one
 * entry chunk instead of transpiling ~1,700 modules; what the source loads on first use (zxcvbn,
 * openai, stripe, @sentry, jose, the OpenAPI generator) stays in chunks of its own, loaded then.
 * The migrations and the default FAQ are embedded in the code, so the bundle reads no file of the
 * source tree. It does resolve prom-client's scrape-time metrics (`src/plugins/metrics/registry.ts`
 * requires them by a computed name) from `node_modules` at the first `/metrics`, so it runs where
 * the production dependencies are installed (the repository, the image).
 */
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";

const ROOT = join(import.meta.dir, "..");

export async function buildBundle(outdir: string): Promise<string[]> {
  rmSync(outdir, { recursive: true, force: true });
  const result = await Bun.build({
    entrypoints: [join(ROOT, "src/index.ts")],
    outdir,
    target: "bun",
    // Not minified: Elysia decides what each handler and hook needs parsed by reading its source
    // text (Sucrose), and fails on minified text (it then prints a non-JSON line to stdout and
    // parses everything for that route). Minifying measured no faster start here.
    minify: false,
    splitting: true,
    // Stack traces in logs and Sentry name the source lines; Bun reads a map only on an error.
    sourcemap: "linked",
  });
  if (!result.success) {
    throw new AggregateError(result.logs, "bun build failed");
  }
  return result.outputs.map((output) => output.path);
}

if (import.meta.main) {
  const outdir = resolve(process.argv[2] ?? join(ROOT, "dist"));
  const files = await buildBundle(outdir);
  process.stdout.write(`built ${files.length} files into ${outdir}\n`);
}
