import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { buildTestApp, serveInProcess, type TestApp, tempDir } from "./support/app";
import { freePort, runToExit, startService } from "./support/process";
import { signal } from "./support/wait";

describe("graceful shutdown (in process)", () => {
  let current: TestApp | null = null;
  afterEach(() => {
    current?.close();
    current = null;
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

  test("production with no secrets exits 2 naming JWT_SECRET_KEY in one line", async () => {
    const result = await runToExit(["bun", "run", "src/index.ts"], { APP_ENV: "production" });
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      "palisade: refusing to start: JWT_SECRET_KEY is required when APP_ENV=production",
    );
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
