import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openDatabase } from "../src/db/client";
import { applyMigrations } from "../src/db/migrate";
import {
  embeddedMigrations,
  LATEST_MIGRATION_MILLIS,
  MIGRATION_TAG_BY_MILLIS,
} from "../src/db/migrations";
import { createLogger } from "../src/logging/logger";
import { PortUnavailable, startServer } from "../src/server";
import { buildTestApp, PRODUCTION_ENV, serveInProcess, type TestApp, tempDir } from "./support/app";
import { makeOthersFiles, makeStoppedFirstStart, OTHERS_FILES } from "./support/database-files";
import { freePort, REPO_ROOT, runToExit, startService } from "./support/process";
import { rawHttp } from "./support/raw-http";
import { signal } from "./support/wait";

describe("graceful shutdown (in process)", () => {
  let current: TestApp | null = null;
  afterEach(() => {
    current?.close();
    current = null;
  });

  test("a port that cannot be bound is a PortUnavailable naming PORT, HOST and the system's reason", () => {
    current = buildTestApp();
    const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const start = (host: string) => () =>
        startServer({
          app: current!.app,
          config: { ...current!.config, host, port: taken.port },
          logger: current!.logger,
          exitProcess: false,
          signals: [],
        });
      expect(start("127.0.0.1")).toThrow(
        new PortUnavailable("127.0.0.1", taken.port, "EADDRINUSE"),
      );
      expect(start("no-such-host.invalid")).toThrow(
        /^PORT \d+ on HOST no-such-host\.invalid cannot be bound \([A-Z_]+, or HOST does not resolve to an address of this machine\)$/,
      );
    } finally {
      taken.stop(true);
    }
  });

  test("in-flight requests finish, then the closers run, then no new connection is accepted", async () => {
    current = buildTestApp();
    const order: string[] = [];
    const entered = signal();
    const release = signal();
    const app = current.app.get("/test/slow", async () => {
      entered.raise();
      await release.promise;
      order.push("slow answered");
      return { done: true };
    });
    const running = serveInProcess(
      { ...current, app },
      {
        onClosed: () => {
          order.push("closed");
        },
      },
    );
    const slow = fetch(new URL("/test/slow", running.url));
    await entered.promise;
    const shutdown = running.shutdown("test");
    // Shutdown has begun and is waiting for the request in flight; now let it finish.
    expect(order).toEqual([]);
    release.raise();
    const response = await slow;
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ done: true });
    await shutdown;
    expect(order).toEqual(["slow answered", "closed"]);
    expect(fetch(new URL("/health", running.url))).rejects.toThrow();
    const messages = current.logs.entries.map((e) => e.msg);
    expect(messages).toContain("shutting down");
    expect(messages).toContain("shutdown complete");
  });

  test("the access lines of requests that finish while draining are written before shutdown completes, in order", async () => {
    current = buildTestApp({ accessLogBuffered: true });
    const entered = signal();
    const release = signal();
    const app = current.app.get("/test/slow", async () => {
      entered.raise();
      await release.promise;
      return { done: true };
    });
    const running = serveInProcess({ ...current, app });
    const slow = fetch(new URL("/test/slow", running.url), {
      headers: { "x-request-id": "drained-request" },
    });
    await entered.promise;
    const shutdown = running.shutdown("test");
    release.raise();
    expect((await slow).status).toBe(200);
    await shutdown;
    const entries = current.logs.entries;
    const access = entries.findIndex((entry) => entry.requestId === "drained-request");
    expect(access).toBeGreaterThanOrEqual(0);
    expect(entries[access]).toMatchObject({ route: "/test/slow", status: 200 });
    expect(access).toBeLessThan(entries.findIndex((entry) => entry.msg === "shutdown complete"));
  });

  test("the stop signalled again ends what is in flight at once; once more, while that is being ended, it is said as the exit (probe 30d F6)", async () => {
    current = buildTestApp();
    const entered = signal();
    const never = signal();
    const ending = signal();
    const app = current.app.get("/test/stuck", async () => {
      entered.raise();
      await never.promise;
      return "late";
    });
    const running = startServer({
      app,
      config: { ...current.config, port: 0 },
      logger: current.logger,
      exitProcess: false,
      signals: ["SIGUSR2"],
      drainTimeoutMs: 60_000,
      // What is in flight takes its time to end, as a payment waiting on Stripe does.
      onDrainTimeout: () => ending.promise,
    });
    const stuck = fetch(new URL("/test/stuck", running.url)).catch((error: Error) => error);
    await entered.promise;
    const messages = () => current!.logs.entries.map((entry) => String(entry.msg));
    const until = async (message: string) => {
      const deadline = Date.now() + 5_000;
      while (!messages().some((m) => m.startsWith(message)) && Date.now() < deadline) {
        await Bun.sleep(5);
      }
    };
    process.kill(process.pid, "SIGUSR2");
    await until("shutting down");
    process.kill(process.pid, "SIGUSR2");
    await until("stop signalled again: ending what is in flight now");
    process.kill(process.pid, "SIGUSR2");
    await until("stop signalled again while ending what was in flight");
    expect(current.logs.entries.at(-1)).toMatchObject({
      level: "error",
      signal: "SIGUSR2",
      msg: "stop signalled again while ending what was in flight: exiting now, without closing (audit rows still queued are written in one attempt, or logged as lost)",
    });
    // Not told to exit (a test), the stop goes on once what is in flight has ended.
    ending.raise();
    await running.shutdown("test");
    expect(await stuck).toBeInstanceOf(Error);
    expect(messages()).not.toContain("drain timed out; closing connections");
    expect(messages().at(-1)).toBe("shutdown complete");
    never.raise();
  });

  test("a request whose connection closed before its answer left is logged and counted 499, not the body read's 400 (probe 31a F5)", async () => {
    current = buildTestApp();
    const running = serveInProcess(current, { drainTimeoutMs: 100 });
    const port = Number(new URL(running.url).port);
    const trickle = async (requestId: string) => {
      const socket = await Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: { data() {}, error() {} },
      });
      socket.write(
        `POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Request-Id: ${requestId}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{"\r\n`,
      );
      return socket;
    };
    const accessLine = (requestId: string) =>
      current!.logs.entries.find((entry) => entry.requestId === requestId && "status" in entry);
    const until = async (found: () => unknown) => {
      const deadline = Date.now() + 5_000;
      while (!found() && Date.now() < deadline) await Bun.sleep(5);
    };

    // The client goes mid-body.
    const leaving = await trickle("client-left");
    await Bun.sleep(50);
    leaving.end();
    await until(() => accessLine("client-left"));
    expect(accessLine("client-left")).toMatchObject({ level: "warn", status: 499 });

    // An answer that left is logged as sent, though its connection closed at once after it.
    const answered = await rawHttp(
      port,
      'POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Request-Id: answered\r\nConnection: close\r\n\r\n{"',
    );
    expect(answered.status).toBe(400);
    await until(() => accessLine("answered"));
    expect(accessLine("answered")).toMatchObject({ status: 400 });
    // A request whose whole body arrived is answered by its handler, and logged with that answer,
    // though its client hangs up before it (probe 33a F2: a failed sign-in was logged 499).
    const hangingUp = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: { data() {}, error() {} },
    });
    const wrong = JSON.stringify({ email: "nobody@example.test", password: "wrong-password-123" });
    hangingUp.write(
      `POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${wrong.length}\r\nX-Request-Id: hung-up\r\n\r\n${wrong}`,
    );
    hangingUp.end();
    await until(() => accessLine("hung-up"));
    expect(accessLine("hung-up")).toMatchObject({ status: 401 });
    const metrics = await (await fetch(new URL("/metrics", running.url))).text();
    expect(metrics).toContain(
      'http_requests_total{method="POST",route="/api/auth/login",status="499"} 1',
    );

    // The stop cuts a body still arriving at the drain timeout.
    const cut = await trickle("cut-at-stop");
    await Bun.sleep(50);
    await running.shutdown("test");
    cut.end();
    await until(() => accessLine("cut-at-stop"));
    expect(accessLine("cut-at-stop")).toMatchObject({ status: 499 });

    expect(
      current.logs.entries.filter(
        (entry) => entry.status === 400 && entry.requestId !== "answered",
      ),
    ).toEqual([]);
  });

  test("requests still running after the drain timeout are cut", async () => {
    current = buildTestApp();
    const entered = signal();
    const never = signal();
    const app = current.app.get("/test/stuck", async () => {
      entered.raise();
      await never.promise;
      return "late";
    });
    const running = serveInProcess({ ...current, app }, { drainTimeoutMs: 100 });
    const stuck = fetch(new URL("/test/stuck", running.url)).catch((error: Error) => error);
    await entered.promise;
    const started = performance.now();
    await running.shutdown("test");
    expect(performance.now() - started).toBeLessThan(4_000);
    expect(await stuck).toBeInstanceOf(Error);
    expect(current.logs.entries.map((e) => e.msg)).toContain(
      "drain timed out; closing connections",
    );
    never.raise();
  });
});

describe("the service process", () => {
  test("starts on embedded defaults with a loud warning, serves /health, exits 0 on SIGTERM", async () => {
    const dir = tempDir();
    try {
      const started = performance.now();
      const service = await startService({ DATABASE_PATH: join(dir.path, "app.db") });
      const response = await fetch(new URL("/health", service.url));
      const elapsed = performance.now() - started;
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ status: "ok" });
      // Not a performance assertion: a start that takes many seconds means something is wrong.
      expect(elapsed).toBeLessThan(10_000);
      expect(service.stderr()).toContain("WARNING: JWT_SECRET_KEY, CSRF_SECRET_KEY not set");
      expect(await service.stop("SIGTERM")).toBe(0);
      expect(service.stdout()).toContain('"msg":"shutdown complete"');
    } finally {
      dir.remove();
    }
  });

  test("SIGINT also shuts down cleanly, and the database is reusable afterwards", async () => {
    const dir = tempDir();
    try {
      const env = { DATABASE_PATH: join(dir.path, "app.db") };
      const first = await startService(env);
      expect(await first.stop("SIGINT")).toBe(0);
      const second = await startService(env);
      expect((await fetch(new URL("/ready", second.url))).status).toBe(200);
      expect(await second.stop()).toBe(0);
    } finally {
      dir.remove();
    }
  });

  test("a start with no APP_ENV says it serves the development profile, and that NODE_ENV=production does not choose it (probe 82a F6)", async () => {
    const dir = tempDir();
    try {
      let starts = 0;
      const warned = async (env: Record<string, string>) => {
        const databasePath = join(dir.path, `app-${++starts}.db`);
        const service = await startService({ DATABASE_PATH: databasePath, ...env });
        const docs = (await fetch(new URL("/docs", service.url))).status;
        await service.stop();
        const lines = service
          .stdout()
          .split("\n")
          .filter((line) => line.includes("APP_ENV is not set"))
          .map((line) => JSON.parse(line) as { level: string; msg: string; nodeEnv?: string });
        return { docs, lines };
      };
      // Every secret set, as a deployment would: nothing else said the profile was development.
      const { APP_ENV: _profile, ALLOWED_HOSTS: _hosts, ...secrets } = PRODUCTION_ENV;
      const nodeProduction = await warned({ ...secrets, NODE_ENV: "production" });
      expect(nodeProduction.docs).toBe(200);
      expect(nodeProduction.lines).toEqual([
        expect.objectContaining({
          level: "warn",
          nodeEnv: "production",
          msg: expect.stringContaining("although NODE_ENV=production"),
        }),
      ]);
      const none = await warned({});
      expect(none.lines).toEqual([
        expect.objectContaining({
          msg: expect.stringContaining("serving the development profile"),
        }),
      ]);
      const named = await warned({ APP_ENV: "development" });
      expect(named.lines).toEqual([]);
    } finally {
      dir.remove();
    }
  }, 30_000);

  test("a production start warns of a development audit key file beside its database, saying whether it is AUDIT_SECRET_KEY (probe 35c F3)", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "app.db");
      await Bun.write(`${path}.audit-key`, `${PRODUCTION_ENV.AUDIT_SECRET_KEY}\n`);
      const elsewhere = join(dir.path, "other.db");
      await Bun.write(`${elsewhere}.audit-key`, "Q1w2E3r4T5y6U7i8O9p0AsDfGhJkLzXc\n");
      const warnings = async (databasePath: string) => {
        const service = await startService({ ...PRODUCTION_ENV, DATABASE_PATH: databasePath });
        await service.stop();
        return service
          .stdout()
          .split("\n")
          .filter((line) => line.includes("development audit key file"))
          .map((line) => JSON.parse(line) as { file: string; msg: string });
      };
      const same = await warnings(path);
      expect(same).toHaveLength(1);
      expect(same[0]!.file).toBe(`${path}.audit-key`);
      expect(same[0]!.msg).toStartWith("AUDIT_SECRET_KEY is the development audit key file's");
      const other = await warnings(elsewhere);
      expect(other.map((line) => line.msg)).toEqual([
        expect.stringMatching(/^a development audit key file lies beside the database/),
      ]);
      // The line names the file, never the key.
      const service = await startService({ ...PRODUCTION_ENV, DATABASE_PATH: path });
      await service.stop();
      expect(service.stdout() + service.stderr()).not.toContain(PRODUCTION_ENV.AUDIT_SECRET_KEY);
    } finally {
      dir.remove();
    }
  });

  test("production with no secrets exits 2 naming JWT_SECRET_KEY in one line", async () => {
    const result = await runToExit(["bun", "run", "src/index.ts"], { APP_ENV: "production" });
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      "palisade: refusing to start: JWT_SECRET_KEY is required when APP_ENV=production",
    );
  });

  test("production refuses weak WhatsApp and Stripe webhook secrets, a test-mode Stripe key, an http SENTRY_DSN and a Redis password that is another secret: exit 2, one line naming the variable (probe 43c F5)", async () => {
    const dir = tempDir();
    try {
      const cases: [Record<string, string>, string][] = [
        [{ WHATSAPP_VERIFY_TOKEN: "x" }, "WHATSAPP_VERIFY_TOKEN is shorter than 32 bytes"],
        [{ WHATSAPP_APP_SECRET: "password1234" }, "WHATSAPP_APP_SECRET is shorter than 32 bytes"],
        [
          { WHATSAPP_APP_SECRET_PREVIOUS: "password1234" },
          "WHATSAPP_APP_SECRET_PREVIOUS is shorter than 32 bytes",
        ],
        [
          { STRIPE_WEBHOOK_SECRET: "whsec_1" },
          "STRIPE_WEBHOOK_SECRET has a secret that is shorter than 32 bytes (entry 1)",
        ],
        [
          { STRIPE_SECRET_KEY: "sk_test_123" },
          "STRIPE_SECRET_KEY is a Stripe test-mode key (sk_test_…), refused when APP_ENV=production: use a live key",
        ],
        [
          { SENTRY_DSN: "http://abc123@sentry.example.com/1" },
          "SENTRY_DSN must use https when APP_ENV=production (plain http only to a loopback address)",
        ],
        [
          { REDIS_URL: `redis://:${PRODUCTION_ENV.JWT_SECRET_KEY}@127.0.0.1:1/0` },
          "REDIS_URL must differ from JWT_SECRET_KEY: one value must not hold two roles",
        ],
      ];
      const results = await Promise.all(
        cases.map(([extra]) =>
          runToExit(["bun", "run", "src/index.ts"], {
            ...PRODUCTION_ENV,
            DATABASE_PATH: join(dir.path, "refused.db"),
            PORT: "0",
            ...extra,
          }),
        ),
      );
      results.forEach((result, index) => {
        expect(result.code).toBe(2);
        expect(result.stderr.trim()).toBe(`palisade: refusing to start: ${cases[index]![1]}`);
        expect(result.stdout).toBe("");
      });
    } finally {
      dir.remove();
    }
  }, 30_000);

  test("a REDIS_URL whose database Bun's client would ignore or throw on is refused in one line, exit 2, by the start and config:check, without its password (probe 46c F3)", async () => {
    const dir = tempDir();
    try {
      const urls = [
        "redis://:hunter2hunter2@127.0.0.1:1/abc",
        "redis://:hunter2hunter2@127.0.0.1:1/-1",
        "redis://:hunter2hunter2@127.0.0.1:1/1.5",
        "redis://:hunter2hunter2@127.0.0.1:1/3/extra",
        "redis://:hunter2hunter2@127.0.0.1:1/4294967296",
        "redis://:hunter2hunter2@127.0.0.1:1?db=2",
      ];
      const env = (url: string) => ({ DATABASE_PATH: join(dir.path, "redis.db"), REDIS_URL: url });
      const results = await Promise.all(
        urls.flatMap((url) => [
          runToExit(["bun", "run", "src/index.ts"], { ...env(url), PORT: "0" }),
          runToExit(["bun", "run", "src/cli/index.ts", "config:check"], env(url)),
        ]),
      );
      results.forEach((result, index) => {
        const prefix = index % 2 === 0 ? "palisade: refusing to start:" : "palisade config:check:";
        expect(result.code).toBe(2);
        expect(result.stderr.trim().split("\n")).toHaveLength(1);
        expect(result.stderr).toStartWith(`${prefix} REDIS_URL `);
        expect(result.stderr + result.stdout).not.toContain("hunter2");
      });
      expect(results[10]!.stderr).toContain("must not have a query or fragment");
    } finally {
      dir.remove();
    }
  }, 60_000);

  test("a PORT that cannot be bound, or a HOST that is no address, exits 2 in one line naming them, no stack (probe 26f F2)", async () => {
    const dir = tempDir();
    const taken = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: { data() {} },
    });
    try {
      const env = { DATABASE_PATH: join(dir.path, "port.db"), LOG_LEVEL: "warn" };
      const busy = await runToExit(["bun", "run", "src/index.ts"], {
        ...env,
        PORT: String(taken.port),
      });
      expect(busy.code).toBe(2);
      const refusals = busy.stderr.split("\n").filter((line) => line.startsWith("palisade:"));
      expect(refusals).toEqual([
        `palisade: refusing to start: PORT ${taken.port} on HOST 127.0.0.1 cannot be bound (EADDRINUSE)`,
      ]);
      expect(`${busy.stdout}${busy.stderr}`).not.toContain("    at ");
      expect(`${busy.stdout}${busy.stderr}`).not.toContain("node_modules");

      // A host name that does not resolve: Bun says EADDRINUSE or ENOENT, the line says what else
      // it may be.
      const unresolved = await runToExit(["bun", "run", "src/index.ts"], {
        ...env,
        PORT: "0",
        HOST: "no-such-host.invalid",
      });
      expect(unresolved.code).toBe(2);
      expect(unresolved.stderr.trim().split("\n").at(-1)).toMatch(
        /^palisade: refusing to start: PORT 0 on HOST no-such-host\.invalid cannot be bound \([A-Z_]+, or HOST does not resolve to an address of this machine\)$/,
      );
      for (const host of ["1.2.3.4\u001b[31m", "a b"]) {
        const bad = await runToExit(["bun", "run", "src/index.ts"], {
          ...env,
          PORT: "0",
          HOST: host,
        });
        expect(bad.code).toBe(2);
        expect(bad.stderr.trim()).toBe(
          "palisade: refusing to start: HOST must be an IP address or a host name",
        );
      }
    } finally {
      taken.stop(true);
      dir.remove();
    }
  }, 30_000);

  test("a start refused for its port changes no bootstrap key of the processes already running on the file: API_KEYS is applied once it listens (probe 89c F1)", async () => {
    const dir = tempDir();
    const key = `palisade-fleet-key-${"k".repeat(24)}`;
    const other = `palisade-other-key-${"o".repeat(24)}`;
    const env = { DATABASE_PATH: join(dir.path, "fleet.db") };
    const running = await startService({ ...env, API_KEYS: key });
    const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const asKey = (secret: string) =>
        fetch(new URL("/api/chat/conversations", running.url), {
          headers: { authorization: `Bearer ${secret}` },
        });
      expect((await asKey(key)).status).toBe(200);
      // A mis-set instance on the file: API_KEYS without the fleet's key (and with another), on
      // a port it cannot have.
      for (const apiKeys of [undefined, other]) {
        const refused = await runToExit(["bun", "run", "src/index.ts"], {
          ...env,
          PORT: String(taken.port),
          ...(apiKeys ? { API_KEYS: apiKeys } : {}),
        });
        expect(refused.code).toBe(2);
        expect(refused.stderr).toContain(`PORT ${taken.port} on HOST 127.0.0.1 cannot be bound`);
      }
      // Past the running processes' cache (a revocation reaches them within a second).
      await Bun.sleep(1_500);
      expect((await asKey(key)).status).toBe(200);
      expect((await asKey(other)).status).toBe(401);
      const stored = new Database(env.DATABASE_PATH, { readonly: true });
      try {
        expect(
          stored.query("SELECT count(*) AS n, count(revoked_at) AS revoked FROM api_keys").get(),
        ).toEqual({ n: 1, revoked: 0 });
      } finally {
        stored.close();
      }
    } finally {
      taken.stop(true);
      await running.stop();
      dir.remove();
    }
  }, 30_000);

  test("a SENTRY_DSN the Sentry SDK would reject exits 2 in one line naming SENTRY_DSN, never printing it", async () => {
    const dir = tempDir();
    try {
      for (const dsn of ["http://DSNKEY0123456789@127.0.0.1:1/", "http://127.0.0.1:1/42"]) {
        const result = await runToExit(["bun", "run", "src/index.ts"], {
          DATABASE_PATH: join(dir.path, "dsn.db"),
          PORT: "0",
          SENTRY_DSN: dsn,
        });
        expect(result.code).toBe(2);
        expect(result.stderr.trim().split("\n")).toHaveLength(1);
        expect(result.stderr).toContain("SENTRY_DSN must be a Sentry DSN");
        expect(`${result.stdout}${result.stderr}`).not.toContain("DSNKEY0123456789");
        expect(`${result.stdout}${result.stderr}`).not.toContain("127.0.0.1:1");
      }
    } finally {
      dir.remove();
    }
  });

  test("a migrations table with a migration missing from its middle exits 2 in one line naming it; the CLI refuses too", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "gap.db");
      const db = openDatabase(path);
      applyMigrations(db);
      const [, second] = embeddedMigrations();
      db.$client.run("DELETE FROM __drizzle_migrations WHERE created_at = ?", [
        second!.folderMillis,
      ]);
      db.$client.close();
      const missing = MIGRATION_TAG_BY_MILLIS.get(second!.folderMillis)!;

      const result = await runToExit(["bun", "run", "src/index.ts"], {
        DATABASE_PATH: path,
        PORT: "0",
      });
      expect(result.code).toBe(2);
      const lines = result.stderr.trim().split("\n");
      expect(lines.at(-1)).toStartWith(`palisade: DATABASE_PATH ${path}: migrations failed: `);
      expect(lines.at(-1)).toContain(`but not the older ${missing}`);
      expect(result.stderr).not.toContain("    at ");

      const cli = await runToExit(["bun", "run", "src/cli/index.ts", "db:migrate"], {
        DATABASE_PATH: path,
      });
      expect(cli.code).toBe(1);
      expect(cli.stderr.trim().split("\n")).toHaveLength(1);
      expect(cli.stderr).toContain(
        `palisade db:migrate: DATABASE_PATH ${path}: migrations failed: the migrations table records`,
      );
      expect(cli.stdout).toBe("");
    } finally {
      dir.remove();
    }
  });

  test("a database a newer release migrated is served, with a warning naming how many migrations this release does not know", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "newer.db");
      const db = openDatabase(path);
      applyMigrations(db);
      // What the next release's migration leaves: its row (and whatever schema it made).
      db.$client.run("INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('next', ?)", [
        LATEST_MIGRATION_MILLIS + 86_400_000,
      ]);
      db.$client.close();

      const service = await startService({ DATABASE_PATH: path });
      expect((await fetch(new URL("/health", service.url))).status).toBe(200);
      expect(await service.stop("SIGTERM")).toBe(0);
      const warning = service
        .stdout()
        .split("\n")
        .find((line) => line.includes("migrated by a newer release"));
      expect(JSON.parse(warning!)).toMatchObject({ level: "warn", newerMigrations: 1 });

      const cli = await runToExit(["bun", "run", "src/cli/index.ts", "db:migrate"], {
        DATABASE_PATH: path,
      });
      expect(cli.code).toBe(0);
      expect(cli.stdout).toContain("and 1 from a newer release that this one does not know");
    } finally {
      dir.remove();
    }
  });

  test("another application's SQLite file exits 2 with one line naming DATABASE_PATH, left byte for byte with nothing beside it (no audit key either); an empty file is still served (probe 43c F2)", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "grafana.db");
      const other = new Database(path);
      other.run("CREATE TABLE dashboard (id INTEGER PRIMARY KEY, title TEXT)");
      other.run("INSERT INTO dashboard (title) VALUES ('Production')");
      other.close();
      const before = readFileSync(path);
      const result = await runToExit(["bun", "run", "src/index.ts"], {
        DATABASE_PATH: path,
        PORT: "0",
      });
      expect(result.code).toBe(2);
      expect(result.stderr).toBe(
        `palisade: DATABASE_PATH ${path} holds no Palisade database (another application's tables): Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)\n`,
      );
      expect(result.stdout).toBe("");
      expect(readFileSync(path).equals(before)).toBe(true);
      expect(readdirSync(dir.path)).toEqual(["grafana.db"]);

      const empty = join(dir.path, "empty.db");
      writeFileSync(empty, "");
      const service = await startService({ DATABASE_PATH: empty });
      expect((await fetch(new URL("/health", service.url))).status).toBe(200);
      expect(await service.stop("SIGTERM")).toBe(0);
    } finally {
      dir.remove();
    }
  });

  test("a path that names a FIFO exits 2 with one line naming DATABASE_PATH, where the start hung at its first read, deaf to SIGTERM (probe 46c F5)", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "fifo.db");
      expect(Bun.spawnSync(["mkfifo", path]).exitCode).toBe(0);
      const result = await runToExit(["bun", "run", "src/index.ts"], {
        DATABASE_PATH: path,
        PORT: "0",
      });
      expect(result.code).toBe(2);
      expect(result.stderr).toBe(
        `palisade: DATABASE_PATH ${path} is not a regular file (a FIFO): the database is a file (check the path)\n`,
      );
      expect(readdirSync(dir.path)).toEqual(["fifo.db"]);
    } finally {
      dir.remove();
    }
  });

  test("a file that is no SQLite database exits 2 with one line naming DATABASE_PATH, and no audit key made beside it (probe 45a F4)", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "conf.yaml");
      writeFileSync(path, "key: value\n");
      const result = await runToExit(["bun", "run", "src/index.ts"], {
        DATABASE_PATH: path,
        PORT: "0",
      });
      expect(result.code).toBe(2);
      expect(result.stderr).toBe(
        `palisade: DATABASE_PATH ${path} is not a usable SQLite database: it does not start as one (check the path)\n`,
      );
      expect(readdirSync(dir.path)).toEqual(["conf.yaml"]);
    } finally {
      dir.remove();
    }
  });

  test("a file of another's views and header marks, or with a migrations table not as Palisade's migrator makes it, exits 2 with nothing written to it or beside it; Palisade's file whose first start stopped before its migrations is finished and served (probe 44b F2, F3)", async () => {
    const dir = tempDir();
    try {
      const paths = makeOthersFiles(dir.path);
      for (const name of ["views.db", "migrations-one-line.db"]) {
        const at = OTHERS_FILES.findIndex((file) => file.name === name);
        const path = paths[at]!;
        const before = readFileSync(path);
        const result = await runToExit(["bun", "run", "src/index.ts"], {
          DATABASE_PATH: path,
          PORT: "0",
        });
        expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({
          code: 2,
          stdout: "",
          stderr: `palisade: DATABASE_PATH ${path} holds no Palisade database (${OTHERS_FILES[at]!.holds}): Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)\n`,
        });
        expect(readFileSync(path).equals(before)).toBe(true);
      }
      expect(readdirSync(dir.path).sort()).toEqual(OTHERS_FILES.map((file) => file.name).sort());

      const stopped = join(dir.path, "stopped.db");
      makeStoppedFirstStart(stopped);
      const service = await startService({ DATABASE_PATH: stopped });
      expect((await fetch(new URL("/health", service.url))).status).toBe(200);
      expect(await service.stop("SIGTERM")).toBe(0);
    } finally {
      dir.remove();
    }
  });

  test("an unusable database path exits 2 with one line naming DATABASE_PATH", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "not-a-db");
      await Bun.write(path, "plain text, not SQLite ".repeat(100));
      const result = await runToExit(["bun", "run", "src/index.ts"], { DATABASE_PATH: path });
      expect(result.code).toBe(2);
      const lines = result.stderr.trim().split("\n");
      expect(lines.at(-1)).toStartWith(`palisade: DATABASE_PATH ${path} is not a usable SQLite`);
      expect(result.stderr).not.toContain("    at ");
    } finally {
      dir.remove();
    }
  });
});

test("with REDIS_URL unreachable the service still starts, and /ready reports Redis down", async () => {
  const dir = tempDir();
  const closedPort = freePort();
  try {
    const service = await startService({
      DATABASE_PATH: join(dir.path, "app.db"),
      REDIS_URL: `redis://127.0.0.1:${closedPort}`,
    });
    expect((await fetch(new URL("/health", service.url))).status).toBe(200);
    const ready = await fetch(new URL("/ready", service.url));
    expect(ready.status).toBe(503);
    const body = (await ready.json()) as { checks: Record<string, { status: string }> };
    expect(body.checks.redis?.status).toBe("down");
    expect(service.stdout()).toContain("redis unreachable at start");
    expect(await service.stop()).toBe(0);
  } finally {
    dir.remove();
  }
});

test("the main server never serves Bun's development error page: what escapes the app is a bare problem+json 500", async () => {
  const logs: string[] = [];
  const logger = createLogger({
    level: "info",
    destination: { write: (line: string) => logs.push(line) },
  });
  // The app's own handler fails outside anything that catches: startServer's options decide what
  // Bun answers.
  const failing = {
    server: null as Bun.Server<unknown> | null,
    listen(options: Record<string, unknown>) {
      this.server = Bun.serve({
        ...(options as unknown as Bun.Serve.Options<unknown>),
        fetch() {
          throw new Error(`failure at ${REPO_ROOT}/src/secret-place.ts`);
        },
      } as Bun.Serve.Options<unknown>);
    },
    async stop(closeActiveConnections?: boolean) {
      await this.server?.stop(closeActiveConnections);
    },
  };
  const running = startServer({
    app: failing,
    config: { host: "127.0.0.1", port: 0, bodyLimits: { server: 1024 * 1024 } } as never,
    logger,
    exitProcess: false,
    signals: [],
  });
  try {
    for (const request of [
      "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
      "GET /health HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
      "GET /health HTTP/1.0\r\n\r\n",
    ]) {
      const response = await rawHttp(Number(running.url.port), request);
      expect(response.status).toBe(500);
      expect(response.headers["content-type"]).toBe("application/problem+json");
      expect(JSON.parse(response.body).code).toBe("INTERNAL");
      expect(response.text).not.toContain(REPO_ROOT);
      expect(response.text).not.toContain("secret-place");
      expect(response.text).not.toContain("    at ");
    }
    expect(logs.some((line) => line.includes("request failed outside the app"))).toBe(true);
  } finally {
    await running.shutdown("test");
  }
});
