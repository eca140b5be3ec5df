/**
 * The limiter and the audit log across real processes: several service processes sharing one
 * SQLite file, and a process killed with SIGKILL.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir } from "./support/app";
import { freePort, runToExit, type ServiceProcess, startService } from "./support/process";

/**
 * Three service processes on one database file, pushed onto `into` as each starts, returned once
 * each is ready: a process still hashing its dummy login password after "listening" (argon2id, on
 * this 2-core machine) answers a burst late, after the others have taken the whole limit.
 */
async function startThree(env: Record<string, string>, into: ServiceProcess[]) {
  // Migrations run at start; starting one first keeps the others from racing to create tables.
  into.push(await startService(env));
  into.push(...(await Promise.all([startService(env), startService(env)])));
  for (const service of into) {
    const ready = new URL("/ready", service.url);
    for (let tries = 0; (await fetch(ready)).status !== 200; tries++) {
      if (tries >= 200) throw new Error(`${service.url} never became ready`);
      await Bun.sleep(25);
    }
  }
}

/** Waits until at least `marginMs` remain in the current minute, so a burst stays in one window. */
async function awayFromMinuteEnd(marginMs: number) {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < marginMs) await Bun.sleep(left + 50);
}

test("three processes on one file admit exactly 50 of 300 concurrent requests for one key between them", async () => {
  const dir = tempDir();
  const services: ServiceProcess[] = [];
  try {
    const env = {
      DATABASE_PATH: join(dir.path, "shared.db"),
      RATE_LIMIT_PER_MINUTE: "50",
      TRUST_PROXY: "loopback",
      RATE_LIMIT_BURST: "1000",
      LOG_LEVEL: "info",
    };
    await startThree(env, services);
    // Warm each process up (its first /openapi.json builds the document) from another address,
    // so that none of them is still busy with its first request when the burst arrives.
    for (const service of services) {
      const warm = await fetch(new URL("/openapi.json", service.url), {
        headers: { "x-forwarded-for": "198.51.100.7" },
      });
      await warm.arrayBuffer();
    }
    await awayFromMinuteEnd(15_000);

    const responses = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        fetch(new URL("/openapi.json", services[i % 3]!.url)).then(async (r) => {
          await r.arrayBuffer();
          return r.status;
        }),
      ),
    );
    expect(responses.every((s) => s === 200 || s === 429 || s === 403)).toBe(true);
    // Request j went to process j % 3, 100 to each. Together they admitted exactly the limit: had
    // each counted on its own, each would have admitted 50, 150 in all (the refused address is
    // blocked after a few refusals: 403 from then on). Which one admitted how many is timing — a
    // process quick to take the whole limit leaves the others none (runs failed an "every process
    // admitted some", then a "two admitted some").
    expect(responses.filter((s) => s === 200)).toHaveLength(50);
    const db = new Database(env.DATABASE_PATH, { readonly: true });
    const row = db
      .query(
        "SELECT current FROM rate_limit_counters WHERE policy = 'default' AND key = 'ip:127.0.0.1'",
      )
      .get() as { current: number };
    db.close();
    expect(row.current).toBe(50);
  } finally {
    await Promise.all(services.map((s) => s.stop("SIGKILL")));
    dir.remove();
  }
}, 60_000);

test("with leases taken (a hot key, a limit of 300): three processes never admit more than the limit, and all of it once leases come back", async () => {
  const dir = tempDir();
  const services: ServiceProcess[] = [];
  try {
    const env = {
      DATABASE_PATH: join(dir.path, "leased.db"),
      RATE_LIMIT_PER_MINUTE: "300",
      RATE_LIMIT_BURST: "1000",
      // Refusals must not block the client: the test goes on after them.
      IP_BLOCK_RATE_LIMIT_REFUSALS: "0",
      TRUST_PROXY: "loopback",
      LOG_LEVEL: "info",
    };
    await startThree(env, services);
    await awayFromMinuteEnd(20_000);
    const db = new Database(env.DATABASE_PATH, { readonly: true });
    const counted = () =>
      (
        db
          .query(
            "SELECT current FROM rate_limit_counters WHERE policy = 'default' AND key = 'ip:198.51.100.9'",
          )
          .get() as { current: number } | null
      )?.current ?? 0;
    let admitted = 0;
    // Ten requests in flight on each process per round: the key is hot in all three.
    const round = async () => {
      const statuses = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          fetch(new URL("/not-here", services[i % 3]!.url), {
            headers: { "x-forwarded-for": "198.51.100.9" },
          }).then(async (r) => {
            await r.arrayBuffer();
            return r.status;
          }),
        ),
      );
      expect(statuses.every((s) => s === 404 || s === 429)).toBe(true);
      admitted += statuses.filter((s) => s === 404).length;
      expect(admitted).toBeLessThanOrEqual(300);
    };
    for (let i = 0; i < 12; i++) await round();
    expect(counted()).toBeLessThanOrEqual(300);
    // Leases expire within 200 ms and give back what they did not use: the rest is reachable.
    await Bun.sleep(400);
    for (let i = 0; i < 40 && admitted < 300; i++) await round();
    expect(admitted).toBe(300);
    await round();
    expect(admitted).toBe(300);
    await Bun.sleep(400);
    expect(counted()).toBe(300);
    db.close();
  } finally {
    await Promise.all(services.map((s) => s.stop("SIGKILL")));
    dir.remove();
  }
}, 60_000);

test("after SIGKILL every must-not-lose event of an answered request is on disk", async () => {
  const dir = tempDir();
  const path = join(dir.path, "crash.db");
  const env = {
    DATABASE_PATH: path,
    TRUST_PROXY: "loopback",
    RATE_LIMIT_PER_MINUTE: "1",
    RATE_LIMIT_BURST: "1000",
    LOG_LEVEL: "info",
  };
  let service: ServiceProcess | null = await startService(env);
  try {
    await awayFromMinuteEnd(15_000);
    const url = service.url;
    const from = (ip: string) =>
      fetch(new URL("/openapi.json", url), { headers: { "x-forwarded-for": ip } }).then(
        async (r) => {
          await r.arrayBuffer();
          return r.status;
        },
        () => 0,
      );

    // Background traffic that is still in flight when the process dies.
    let flooding = true;
    const flood = (async () => {
      let n = 0;
      while (flooding) {
        await Promise.all(Array.from({ length: 20 }, () => from(`198.51.100.${n++ % 250}`)));
      }
    })();

    // Each client is refused until the 5th refusal blocks it; its 403 proves the block was answered.
    const clients = Array.from({ length: 30 }, (_, i) => `203.0.113.${i + 1}`);
    const blockedSeen = await Promise.all(
      clients.map(async (ip) => {
        for (let i = 0; i < 10; i++) if ((await from(ip)) === 403) return ip;
        return null;
      }),
    );
    service.proc.kill("SIGKILL");
    await service.proc.exited;
    flooding = false;
    await flood;
    service = null;

    const answered = blockedSeen.filter((ip): ip is string => ip !== null);
    expect(answered.length).toBe(clients.length);

    // The service starts again on the crashed file.
    service = await startService(env);
    expect((await fetch(new URL("/ready", service.url))).status).toBe(200);
    await service.stop();
    service = null;

    const db = new Database(path, { readonly: true });
    const logged = new Set(
      db
        .query("SELECT ip FROM audit_events WHERE type = 'ip.blocked'")
        .values()
        .map((row) => row[0] as string),
    );
    db.close();
    for (const ip of answered) expect(logged.has(ip)).toBe(true);

    const cli = (command: string) => runToExit(["bun", "run", "src/cli/index.ts", command], env);
    const intact = await cli("audit:verify");
    expect(intact.code).toBe(0);

    const writable = new Database(path);
    writable.run("UPDATE audit_events SET detail = '{}' WHERE id = 1");
    writable.close();
    const broken = await cli("audit:verify");
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain("chain broken at row 1");
  } finally {
    await service?.stop("SIGKILL");
    dir.remove();
  }
}, 90_000);

test("several processes share one port (SO_REUSEPORT) and one database", async () => {
  const dir = tempDir();
  const port = String(freePort());
  const env = { DATABASE_PATH: join(dir.path, "shared.db"), PORT: port, LOG_LEVEL: "info" };
  const first = await startService(env);
  const second = await startService(env);
  try {
    expect(first.url.port).toBe(port);
    expect(second.url.port).toBe(port);
    // With the first gone, the second still answers on the same port.
    expect(await first.stop()).toBe(0);
    const response = await fetch(`http://127.0.0.1:${port}/ready`);
    expect(response.status).toBe(200);
  } finally {
    await first.stop("SIGKILL");
    await second.stop("SIGKILL");
    dir.remove();
  }
}, 60_000);
