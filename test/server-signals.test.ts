/**
 * Signals outside the first SIGTERM (probe 30d F6): a hang-up drains as SIGTERM does unless the
 * process was started with it ignored; the stop signalled again ends what is in flight at once;
 * signalled again after that, the process exits at once.
 */
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { stopSignals } from "../src/stop-signals";
import { tempDir } from "./support/app";
import { STRIPE_TEST_KEY } from "./support/payments";
import { REPO_ROOT, type ServiceProcess, startService } from "./support/process";
import { startFakeStripe } from "./support/stripe-server";

let cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const step of cleanups.reverse()) await step();
  cleanups = [];
});

function databaseEnv(): Record<string, string> {
  const dir = tempDir();
  cleanups.push(dir.remove);
  return { DATABASE_PATH: join(dir.path, "app.db"), LOG_LEVEL: "info" };
}

async function started(env: Record<string, string>, command?: string[]): Promise<ServiceProcess> {
  const service = await startService(env, 10_000, command ? { command } : undefined);
  cleanups.push(() => {
    if (service.proc.exitCode === null) service.proc.kill("SIGKILL");
  });
  return service;
}

const linesOf = (service: ServiceProcess) =>
  service
    .stdout()
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { msg: string; level: string; [field: string]: unknown });

async function logged(service: ServiceProcess, message: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (linesOf(service).some((line) => line.msg === message)) return;
    await Bun.sleep(10);
  }
  throw new Error(`never logged "${message}":\n${service.stdout()}`);
}

/** A JSON body that never ends: a request the service holds in flight until it is cut. */
function bodyInFlight(service: ServiceProcess): Promise<unknown> {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode('{"email":"'));
    },
  });
  return fetch(new URL("/api/auth/login", service.url), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  }).catch((error: unknown) => error);
}

describe("stop signals", () => {
  test("SIGHUP drains and exits 0 as SIGTERM does", async () => {
    const service = await started(databaseEnv());
    expect(await service.stop("SIGHUP")).toBe(0);
    const lines = linesOf(service);
    expect(lines.find((line) => line.msg === "shutting down")).toMatchObject({ reason: "SIGHUP" });
    expect(lines.some((line) => line.msg === "shutdown complete")).toBe(true);
  });

  test("started under nohup, SIGHUP is still ignored and the service keeps serving", async () => {
    const service = await started(databaseEnv(), ["nohup", "bun", "run", "src/index.ts"]);
    service.proc.kill("SIGHUP");
    await Bun.sleep(300);
    expect(service.proc.exitCode).toBeNull();
    expect((await fetch(new URL("/health", service.url))).status).toBe(200);
    expect(linesOf(service).some((line) => line.msg === "shutting down")).toBe(false);
    expect(await service.stop("SIGTERM")).toBe(0);
  });

  test("which signals stop it, from the kernel's list of ignored signals", () => {
    const status = (mask: string) => `Name:\tbun\nSigBlk:\t0000000000000000\nSigIgn:\t${mask}\n`;
    expect(stopSignals(status("0000000000000000"))).toEqual(["SIGTERM", "SIGINT", "SIGHUP"]);
    expect(stopSignals(status("0000000000001000"))).toEqual(["SIGTERM", "SIGINT", "SIGHUP"]);
    expect(stopSignals(status("0000000000000001"))).toEqual(["SIGTERM", "SIGINT"]);
    expect(stopSignals(status("0000000000001003"))).toEqual(["SIGTERM"]);
    // SIGINT ignored (a job started with & from a script), SIGTERM ignored: SIGTERM still stops it.
    expect(stopSignals(status("0000000000004002"))).toEqual(["SIGTERM", "SIGHUP"]);
    expect(stopSignals(null)).toEqual(["SIGTERM", "SIGINT", "SIGHUP"]);
    // This process's own list, read from the kernel.
    expect(stopSignals()).toEqual(expect.arrayContaining(["SIGTERM", "SIGINT"]));
  });

  test("signalled again while draining, what is in flight is ended now; the stop still closes and exits 0", async () => {
    const service = await started(databaseEnv());
    const inFlight = bodyInFlight(service);
    // Time for the request to reach the service, whose guard then waits on the body (the
    // "shutting down" line below says it was in flight).
    await Bun.sleep(300);
    const signalled = Date.now();
    service.proc.kill("SIGTERM");
    await logged(service, "shutting down");
    service.proc.kill("SIGINT");
    expect(await service.proc.exited).toBe(0);
    // The drain's 10 s did not run out: the second signal ended it.
    expect(Date.now() - signalled).toBeLessThan(8_000);
    await inFlight;
    const lines = linesOf(service);
    expect(lines.find((line) => line.msg === "shutting down")).toMatchObject({ pending: 1 });
    expect(
      lines.find((line) =>
        line.msg.startsWith("stop signalled again: ending what is in flight now"),
      ),
    ).toMatchObject({ level: "warn", signal: "SIGINT" });
    expect(lines.some((line) => line.msg === "drain timed out; closing connections")).toBe(false);
    expect(lines.at(-1)?.msg).toBe("shutdown complete");
  });

  test("signalled again once in-flight work is being ended (a payment waiting on Stripe), it exits 1 at once, saying so", async () => {
    const stripe = startFakeStripe();
    cleanups.push(() => stripe.stop());
    const held = stripe.holdNext("/v1/payment_intents");
    cleanups.push(() => held.release());
    const service = await started({
      ...databaseEnv(),
      STRIPE_SECRET_KEY: STRIPE_TEST_KEY,
      STRIPE_API_URL: stripe.url,
      RATE_LIMIT_PER_MINUTE: "1000",
      RATE_LIMIT_BURST: "1000",
    });
    const email = "payer@example.test";
    const password = "violet-Harbor-quantum-73!";
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(new URL(path, service.url), {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      });
    expect((await post("/api/auth/register", { email, password })).status).toBe(201);
    const login = await post("/api/auth/login", { email, password });
    const { accessToken } = (await login.json()) as { accessToken: string };
    const payment = post(
      "/api/payments/intents",
      { amount: 1200, currency: "eur" },
      { authorization: `Bearer ${accessToken}`, "idempotency-key": "signals-test-0001" },
    ).catch((error: unknown) => error);
    await held.reached;

    service.proc.kill("SIGTERM");
    await logged(service, "shutting down");
    service.proc.kill("SIGTERM");
    await logged(
      service,
      "stop signalled again: ending what is in flight now; a further signal exits at once",
    );
    // Ending it waits for Stripe (up to 20 s): the operator does not.
    await Bun.sleep(200);
    expect(service.proc.exitCode).toBeNull();
    const third = Date.now();
    service.proc.kill("SIGTERM");
    expect(await service.proc.exited).toBe(1);
    expect(Date.now() - third).toBeLessThan(5_000);
    expect(linesOf(service).slice(-2)).toEqual([
      expect.objectContaining({
        level: "error",
        signal: "SIGTERM",
        msg: "stop signalled again while ending what was in flight: exiting now, without closing (audit rows still queued are written in one attempt, or logged as lost)",
      }),
      // The audit rows it wrote, in the head logged last, as at any stop (probe 51b F3).
      expect.objectContaining({ level: "info", msg: "audit chain head" }),
    ]);
    await payment;
  }, 30_000);

  test("signalled again while the stop waits for another connection's lock, it exits 1 naming what it leaves undone (probe 45a F3)", async () => {
    const stripe = startFakeStripe();
    cleanups.push(() => stripe.stop());
    const held = stripe.holdNext("/v1/payment_intents");
    cleanups.push(() => held.release());
    stripe.failNext("/v1/payment_intents", {
      status: 400,
      code: "amount_too_small",
      shouldRetry: false,
    });
    const database = databaseEnv();
    const service = await started({
      ...database,
      STRIPE_SECRET_KEY: STRIPE_TEST_KEY,
      STRIPE_API_URL: stripe.url,
      RATE_LIMIT_PER_MINUTE: "1000",
      RATE_LIMIT_BURST: "1000",
    });
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(new URL(path, service.url), {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      });
    const email = "payer@example.test";
    const password = "violet-Harbor-quantum-73!";
    expect((await post("/api/auth/register", { email, password })).status).toBe(201);
    const { accessToken } = (await (await post("/api/auth/login", { email, password })).json()) as {
      accessToken: string;
    };
    const payment = post(
      "/api/payments/intents",
      { amount: 1200, currency: "eur" },
      { authorization: `Bearer ${accessToken}`, "idempotency-key": "signals-test-0002" },
    );
    // Another process (a backup, a CLI command) takes the write lock while Stripe works: the
    // refused intent's claim waits for it to be given back.
    const holder = new Database(database.DATABASE_PATH!);
    cleanups.push(() => {
      if (holder.inTransaction) holder.run("ROLLBACK");
      holder.close();
    });
    await held.reached;
    holder.run("BEGIN IMMEDIATE");
    held.release();
    expect((await payment).status).toBe(502);
    // An audit row queued while the lock holds (the guard's refusal of a bad path).
    const refused = await fetch(new URL("/api/x%00y", service.url));
    expect(refused.status).toBe(400);
    const refusedId = refused.headers.get("x-request-id");

    service.proc.kill("SIGTERM");
    await logged(service, "shutting down");
    // With nothing in flight the drain ends at once; the stop then waits for the lock (30 s at
    // most) to give the claim back.
    await Bun.sleep(1000);
    expect(service.proc.exitCode).toBeNull();
    service.proc.kill("SIGTERM");
    expect(await service.proc.exited).toBe(1);
    const lines = linesOf(service);
    const forced = lines.findIndex((line) =>
      line.msg.startsWith("stop signalled again while closing: exiting now"),
    );
    expect(forced).toBeGreaterThan(-1);
    expect(lines.slice(forced + 1)).toEqual([
      expect.objectContaining({
        level: "warn",
        claims: 1,
        msg: "Idempotency-Key claims not given back before the stop (the stop was signalled again): a retry with such a key is answered 409 until its claim's two minutes end",
      }),
      // Named as the stop's own give-up names them (probe 50b F5).
      expect.objectContaining({
        level: "error",
        lost: 1,
        types: { "request.rejected": 1 },
        requestIds: [refusedId],
        msg: "audit events lost at shutdown: the stop was signalled again",
      }),
      expect.objectContaining({ level: "info", msg: "audit chain head" }),
    ]);
  }, 30_000);
});

describe("a stop signalled during the start (probe 31a F2)", () => {
  /**
   * Spawns the service on a new database file whose write lock the test holds, so the start waits
   * in its migrations; resolves once it has read its configuration (its development banner).
   */
  async function startHeldAtMigrations() {
    const env = databaseEnv();
    // An empty file (no table of another application's, which the start refuses to touch), its
    // write lock held: the start finds it empty, then waits for the lock to make its tables.
    const holder = new Database(env.DATABASE_PATH!);
    holder.run("BEGIN IMMEDIATE");
    const out: string[] = [];
    const err: string[] = [];
    const proc = Bun.spawn(["bun", "run", "src/index.ts"], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", PORT: "0", ...env },
      stdout: "pipe",
      stderr: "pipe",
    });
    cleanups.push(() => {
      if (proc.exitCode === null) proc.kill("SIGKILL");
    });
    const collect = async (stream: ReadableStream<Uint8Array>, into: string[]) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) into.push(decoder.decode(chunk));
    };
    void collect(proc.stdout, out);
    void collect(proc.stderr, err);
    const deadline = Date.now() + 10_000;
    while (!err.join("").includes("WARNING:") && Date.now() < deadline) await Bun.sleep(10);
    expect(err.join("")).toContain("WARNING:");
    return {
      proc,
      env,
      release: () => {
        holder.run("ROLLBACK");
        holder.close();
      },
      stdout: () => out.join(""),
      stderr: () => err.join(""),
    };
  }

  test("is carried out once the service has started: the start's audit rows are written, then it drains and exits 0", async () => {
    const start = await startHeldAtMigrations();
    start.proc.kill("SIGTERM");
    await Bun.sleep(200);
    expect(start.proc.exitCode).toBeNull();
    start.release();
    expect(await start.proc.exited).toBe(0);
    const lines = start
      .stdout()
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { msg: string; reason?: string });
    const messages = lines.map((line) => line.msg);
    // Handed to the server once it listens, or carried out by the start itself, as the signal's
    // delivery falls: either way after the start.
    expect(lines.find((line) => line.msg === "shutting down")).toMatchObject({ reason: "SIGTERM" });
    expect(messages.indexOf("listening")).toBeLessThan(messages.indexOf("shutting down"));
    expect(messages.at(-1)).toBe("shutdown complete");
    // What the migrations sealed is on record: a second sealing of this file would be seen.
    const file = new Database(start.env.DATABASE_PATH!, { readonly: true });
    try {
      const types = file
        .query<{ type: string }, []>("SELECT type FROM audit_events")
        .all()
        .map((row) => row.type);
      expect(types).toContain("auth.credentials_sealed");
      expect(types).toContain("ip.blocks_sealed");
    } finally {
      file.close();
    }
  }, 30_000);
});
