/**
 * The production executable (`bun run build`, `bun run start:dist`): built once into a fresh folder
 * outside the repository, started from an unrelated working directory in production with only its
 * secrets given (every other setting the embedded default), it serves the same service as the
 * source entry, with the libraries loaded on first use kept out of its entry chunk.
 */

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, test } from "bun:test";
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildBundle, EXECUTABLE } from "../../scripts/build";
import { tempDir } from "../support/app";
import { type ServiceProcess, startService } from "../support/process";

// Outside the repository: the executable needs no `node_modules` and no file of the source tree.
const outdir = mkdtempSync(join(tmpdir(), "palisade-build-test-"));
const work = tempDir();
let service: ServiceProcess;
const secret = () => Buffer.from(crypto.getRandomValues(new Uint8Array(48))).toString("base64");
const METRICS_TOKEN = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");
const PRODUCTION = {
  APP_ENV: "production",
  HOST: "127.0.0.1",
  DATABASE_PATH: join(work.path, "bundle.db"),
  JWT_SECRET_KEY: secret(),
  CSRF_SECRET_KEY: secret(),
  AUDIT_SECRET_KEY: secret(),
  METRICS_TOKEN,
  ALLOWED_HOSTS: "127.0.0.1",
};
const PRELOAD_MARK = join(work.path, "preload-ran");
let entry: string;
let chunks: string[];
let recordedEntries: number | null;

beforeAll(async () => {
  // What the executable holds, as plain files to read.
  const files = (await buildBundle(join(outdir, "files"), { compile: false })).outputs;
  expect(files).toContain(join(outdir, "files", "index.js"));
  entry = readFileSync(join(outdir, "files", "index.js"), "utf8");
  chunks = readdirSync(join(outdir, "files"))
    .filter((name) => name.endsWith(".js") && name !== "index.js")
    .map((name) => readFileSync(join(outdir, "files", name), "utf8"));
  // The builder's own settings must not reach the start the build records: this API_KEYS would
  // make it refuse to start (and the build fail).
  const builderKeys = process.env.API_KEYS;
  process.env.API_KEYS = "not-a-key";
  try {
    recordedEntries = (await buildBundle(join(outdir, "exe"))).recordedEntries;
  } finally {
    if (builderKeys === undefined) delete process.env.API_KEYS;
    else process.env.API_KEYS = builderKeys;
  }
  // Its working directory holds a `.env` and a `bunfig.toml` whose preload would leave a mark: it
  // must read neither (anyone able to write a file there would configure it).
  writeFileSync(join(work.path, ".env"), "OPENAPI_PUBLIC=true\n");
  writeFileSync(
    join(work.path, "preload.ts"),
    `require("node:fs").writeFileSync(${JSON.stringify(PRELOAD_MARK)}, "ran");\n`,
  );
  writeFileSync(join(work.path, "bunfig.toml"), 'preload = ["./preload.ts"]\n');
  service = await startService(PRODUCTION, 10_000, {
    command: [join(outdir, "exe", EXECUTABLE)],
    cwd: work.path,
  });
}, 60_000);

afterAll(async () => {
  await service?.stop();
  rmSync(outdir, { recursive: true, force: true });
  work.remove();
});

/**
 * Text only each library holds: absent from the entry, present in one of the other chunks. Not a
 * word Palisade's own code may say (`qwertyuiop`, its weak-secret check's keyboard, or `@scalar`,
 * the docs page's script URL).
 */
const LAZY_MARKERS = {
  "zxcvbn's dictionaries": "keypadMac",
  openai: "OpenAI-Organization",
  stripe: "Stripe-Version",
  "@sentry": "sentry.javascript",
  "the OpenAPI generator": "--scalar-color-accent",
  jose: "JWSInvalid",
};

test("the entry chunk loads no node:crypto: Palisade's hashes are Bun's own, and drizzle's migrator (which loads it) is no part of a start", () => {
  // ~3 MB of a process's memory where node:crypto is loaded (issue #13); the lazy chunks (the
  // SDKs, jose) still load it when they are used.
  const builtins = [...entry.matchAll(/(?:from |__require\()"([a-z:_]+)"/g)].map(
    (found) => found[1],
  );
  expect(builtins).toContain("bun:sqlite");
  expect(builtins.filter((name) => name === "crypto" || name === "node:crypto")).toEqual([]);
  expect(entry).not.toContain("readMigrationFiles");
});

test("the entry chunk holds none of the libraries loaded on first use; each has a chunk of its own", () => {
  for (const [library, marker] of Object.entries(LAZY_MARKERS)) {
    expect({ library, inEntry: entry.includes(marker) }).toEqual({ library, inEntry: false });
    expect({ library, inChunk: chunks.some((chunk) => chunk.includes(marker)) }).toEqual({
      library,
      inChunk: true,
    });
  }
});

test("its bytecode is laid out by a start the build recorded", () => {
  // A start runs thousands of functions and modules (about 20,000 entries); a record that broke
  // off early, or an empty one, would leave most of them unordered.
  expect(recordedEntries).toBeGreaterThan(5_000);
});

const url = (path: string) => new URL(path, service.url);
const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url(path), {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });

test("the bundle answers /health and a ready /ready on a database its embedded migrations made", async () => {
  const health = await fetch(url("/health"));
  expect(health.status).toBe(200);
  expect(await health.json()).toEqual({ status: "ok" });
  const ready = await fetch(url("/ready"));
  expect(ready.status).toBe(200);
  const body = (await ready.json()) as { status: string; checks: Record<string, unknown> };
  expect(body.status).toBe("ready");
  expect(Object.keys(body.checks)).toContain("database");
});

test("the bundle registers (zxcvbn's chunk), logs in (jose's) and answers a chat turn from the shipped FAQ", async () => {
  expect(
    (await post("/api/auth/register", { email: "weak@example.test", password: "password1234" }))
      .status,
  ).toBe(422);
  const credentials = { email: "bundle@example.test", password: "violet-Harbor-quantum-73!" };
  expect((await post("/api/auth/register", credentials)).status).toBe(201);
  const login = await post("/api/auth/login", credentials);
  expect(login.status).toBe(200);
  const { accessToken } = (await login.json()) as { accessToken: string };
  const chat = await post(
    "/api/chat",
    { message: "How do I create an API key?" },
    { authorization: `Bearer ${accessToken}` },
  );
  expect(chat.status).toBe(200);
  const reply = JSON.stringify(await chat.json());
  expect(reply.toLowerCase()).toContain("api key");
});

test("the bundle serves /metrics, with prom-client's scrape-time metrics", async () => {
  const metrics = await fetch(url("/metrics"), {
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  expect(metrics.status).toBe(200);
  const text = await metrics.text();
  expect(text).toContain("process_start_time_seconds");
  expect(text).toContain("http_requests_total");
});

test("the bundle's background checkpoint thread (an entry point of its own) copies a WAL another writer filled back into the file", async () => {
  const path = PRODUCTION.DATABASE_PATH;
  // Another process (a CLI command, a second service) writes ~6 MB and never checkpoints: only the
  // service's thread, started once its WAL guard sees the WAL past 4 MB, can copy it back.
  const writer = Bun.spawnSync(
    [
      process.execPath,
      "-e",
      `const { Database } = require("bun:sqlite");
       const db = new Database(${JSON.stringify(path)});
       db.run("PRAGMA busy_timeout = 5000");
       db.run("PRAGMA wal_autocheckpoint = 0");
       db.run("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)");
       const insert = db.prepare("INSERT INTO filler (data) VALUES (randomblob(4000))");
       for (let i = 0; i < 1500; i++) insert.run();
       process.stdout.write("written\\n");
       process.kill(process.pid, "SIGKILL");`,
    ],
    { timeout: 30_000 },
  );
  // Killed, not exited: a connection closing while the service's holds no read transaction
  // counts as the file's last and checkpoints the whole WAL itself, so the thread had nothing
  // to copy and said nothing (a test failing one run in four).
  expect(writer.stdout.toString()).toBe("written\n");
  expect(writer.signalCode).toBe("SIGKILL");
  const rowsInFile = () => {
    const copy = join(work.path, `file-only-${Date.now()}.db`);
    copyFileSync(path, copy);
    const sqlite = new Database(copy, { readonly: true });
    try {
      const found = sqlite.query("SELECT name FROM sqlite_master WHERE name = 'filler'").get();
      return found
        ? (sqlite.query("SELECT count(*) AS n FROM filler").get() as { n: number }).n
        : 0;
    } catch (error) {
      // A copy taken while pages were being written back: looked at again.
      if (error instanceof Error && "code" in error && error.code === "SQLITE_CORRUPT") return -1;
      throw error;
    } finally {
      sqlite.close();
      rmSync(copy);
    }
  };
  // Generous and apart: on a busy machine (CI beside other work) the copy-back alone took ~10 s,
  // which once left the log line no time of a shared deadline.
  const deadline = Date.now() + 20_000;
  let rows = rowsInFile();
  while (rows < 1500 && Date.now() < deadline) {
    await Bun.sleep(50);
    rows = rowsInFile();
  }
  expect(rows).toBe(1500);
  // Log lines leave in batches: wait for the one that says the thread started.
  const logDeadline = Date.now() + 5_000;
  while (!service.stdout().includes("background thread") && Date.now() < logDeadline) {
    await Bun.sleep(50);
  }
  const said = service.stdout();
  expect(said).toContain("WAL growing: checkpoints moved to a background thread");
  expect(said).not.toContain("background checkpoints failed");
}, 45_000);

test("everything the bundle wrote to stdout is a JSON log line (Elysia reads the unminified handlers)", () => {
  const lines = service.stdout().trim().split("\n");
  expect(lines.length).toBeGreaterThan(1);
  expect(lines.filter((line) => !line.startsWith("{"))).toEqual([]);
  for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
});

test("it reads neither the .env nor the bunfig.toml of its working directory", async () => {
  // Production serves the document to admins only unless OPENAPI_PUBLIC=true, which only the .env said.
  expect((await fetch(url("/openapi.json"))).status).toBe(401);
  expect(existsSync(PRELOAD_MARK)).toBe(false);
});

test("started with no APP_ENV, or a blank one, it is a production start: without the secrets it refuses, naming them", () => {
  const bare = tempDir();
  try {
    // `APP_ENV=` in an env file, or a compose variable the host lacks, is no profile either: it
    // served the development profile with generated secrets (probe 71a F1).
    for (const named of [
      {},
      { APP_ENV: "" },
      { APP_ENV: "  " },
      { APP_ENV: "", ENVIRONMENT: " " },
    ]) {
      const started = Bun.spawnSync([join(outdir, "exe", EXECUTABLE)], {
        cwd: bare.path,
        env: { PATH: process.env.PATH ?? "", PORT: "0", HOST: "127.0.0.1", ...named },
        timeout: 10_000,
      });
      const said = started.stderr.toString();
      expect([started.exitCode, said]).toEqual([2, expect.stringContaining("refusing to start")]);
      expect(said).toContain("JWT_SECRET_KEY is required when APP_ENV=production");
      expect(said).not.toContain("generated random development secrets");
    }
    // ENVIRONMENT alone names the profile (it was refused as differing from an APP_ENV the
    // executable had set itself: probe 71a F4).
    const staging = Bun.spawnSync([join(outdir, "exe", EXECUTABLE)], {
      cwd: bare.path,
      env: { PATH: process.env.PATH ?? "", PORT: "0", HOST: "127.0.0.1", ENVIRONMENT: "staging" },
      timeout: 10_000,
    });
    expect(staging.exitCode).toBe(2);
    expect(staging.stderr.toString()).toContain("JWT_SECRET_KEY is required when APP_ENV=staging");
  } finally {
    bare.remove();
  }
});
