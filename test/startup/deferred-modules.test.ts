import { expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..", "..");

/**
 * What a start loads that no request needs yet (issue #13): each costs start-up time and idle
 * memory, so it is loaded on first use instead.
 */
const DEFERRED = [
  // zxcvbn's dictionaries: the first registration loads them.
  "@zxcvbn-ts/",
  // prom-client's index, which loads its Pushgateway client (node:http, https, zlib).
  "prom-client/index.js",
  "prom-client/lib/pushgateway.js",
  // The OpenTelemetry API, which prom-client's CPU counters load for exemplars (process-cpu.ts).
  "@opentelemetry/api/",
  // jose: the first token signed or verified loads it.
  "jose/",
  // The upstream SDKs, which this app (no OPENAI_API_KEY, STRIPE_SECRET_KEY or SENTRY_DSN) never
  // calls: loading one costs a start 8-40 MB and 60-340 ms of CPU on the shared bench machine
  // (@sentry/bun the most). A feature loads its SDK on first use, or at start only when configured.
  "openai/",
  "stripe/",
  "@sentry/",
  // The OpenAPI generator (some 8,000 lines): the first /openapi.json or /docs request loads it.
  "@elysiajs/openapi/",
  // prom-client's defaults that read their value at scrape time: registered at the first scrape.
  ...[
    "osMemoryHeap",
    "processStartTime",
    "processOpenFileDescriptors",
    "processMaxFileDescriptors",
    "processResources",
    "processHandles",
    "processRequests",
    "heapSizeAndUsed",
    "heapSpacesSizeAndUsed",
    "version",
  ].map((name) => `prom-client/lib/metrics/${name}.js`),
];

/**
 * What a start never loads: pino (and its writers) cost ~25-30 ms of every start and ~5 MB of idle
 * memory; the logger is our own (src/logging/logger.ts).
 */
const NEVER = ["pino/", "pino-std-serializers/", "sonic-boom/", "thread-stream/", "@pinojs/"];

async function loadedModules(...args: string[]) {
  const proc = Bun.spawn(["bun", "test/support/loaded-modules.ts", ...args], {
    cwd: ROOT,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
  ]);
  expect(await proc.exited, err).toBe(0);
  return out
    .trim()
    .split("\n")
    .map(
      (line) =>
        JSON.parse(line) as {
          health?: number;
          register?: number;
          openapi?: number;
          paths?: number;
          docs?: number;
          modules: string[];
        },
    );
}

const deferredIn = (modules: string[]) =>
  modules.filter((path) => DEFERRED.some((name) => path.includes(`node_modules/${name}`)));
const neverIn = (modules: string[]) =>
  modules.filter((path) => NEVER.some((name) => path.includes(`node_modules/${name}`)));

test("a started app that has answered /health has loaded none of the modules deferred to first use", async () => {
  const [started] = await loadedModules();
  expect(started!.health).toBe(200);
  expect(deferredIn(started!.modules)).toEqual([]);
  expect(neverIn(started!.modules)).toEqual([]);
  // The check above looks for the right thing: the logger's own modules are there.
  expect(started!.modules.some((path) => path.endsWith("src/logging/logger.ts"))).toBe(true);
}, 20_000);

test("the first registration loads zxcvbn and checks the password with it", async () => {
  const [started, registered] = await loadedModules("--register");
  expect(deferredIn(started!.modules)).toEqual([]);
  expect(registered!.register).toBe(201);
  expect(
    registered!.modules.some((path) => path.includes("node_modules/@zxcvbn-ts/language-en/")),
  ).toBe(true);
}, 20_000);

test("the first /openapi.json loads the generator and serves the whole document; /docs its page", async () => {
  const [started, served] = await loadedModules("--openapi");
  expect(deferredIn(started!.modules)).toEqual([]);
  expect(served!.openapi).toBe(200);
  expect(served!.paths).toBeGreaterThan(20);
  expect(served!.docs).toBe(200);
  expect(served!.modules.some((path) => path.includes("node_modules/@elysiajs/openapi/"))).toBe(
    true,
  );
}, 20_000);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith(".ts") ? [path] : [];
  });
}

test('no source file imports a value from "prom-client" itself (its index loads the Pushgateway client)', () => {
  const offenders = sourceFiles(join(ROOT, "src")).filter((path) =>
    /^import (?!type )[^;]*from "prom-client";/m.test(readFileSync(path, "utf8")),
  );
  expect(offenders.map((path) => path.slice(ROOT.length + 1))).toEqual([]);
});

test("pino is not a dependency and no source, bench, script or test file imports it", () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as Record<
    string,
    Record<string, string> | undefined
  >;
  expect(Object.keys({ ...pkg.dependencies, ...pkg.devDependencies })).not.toContain("pino");
  const offenders = ["src", "bench", "scripts", "test"]
    .flatMap((dir) => sourceFiles(join(ROOT, dir)))
    .filter((path) =>
      /(?:from|import\(|require\()\s*["']pino(?:\/[^"']*)?["']/.test(readFileSync(path, "utf8")),
    );
  expect(offenders.map((path) => path.slice(ROOT.length + 1))).toEqual([]);
});
