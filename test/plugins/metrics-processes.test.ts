/**
 * Several real processes on one port (`reusePort`), each with a metrics listener of its own taken
 * from one METRICS_PORT range: Prometheus scrapes each process, and their counters add up to what
 * the shared port answered. Plus the production refusal as a real start sees it.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { PRODUCTION_ENV, tempDir } from "../support/app";
import { freePort, runToExit, type ServiceProcess, startService } from "../support/process";

/** Two consecutive loopback ports nothing listens on right now. */
function freePortPair(): number {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = freePort();
    try {
      const probe = Bun.serve({
        port: first + 1,
        hostname: "127.0.0.1",
        fetch: () => new Response(),
      });
      probe.stop(true);
      return first;
    } catch {}
  }
  throw new Error("no two consecutive free ports");
}

function metricsUrl(service: ServiceProcess): URL {
  const match = /"url":"([^"]+)","msg":"metrics listening"/.exec(service.stdout());
  if (!match) throw new Error(`no metrics listener logged:\n${service.stdout()}`);
  return new URL(match[1]!);
}

function healthCount(text: string): number {
  const line = text
    .split("\n")
    .find((l) => l.startsWith('http_requests_total{method="GET",route="/health",status="200"} '));
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}

test("two processes sharing PORT each serve their own /metrics on a port of the range; the sums match", async () => {
  const dir = tempDir();
  const services: ServiceProcess[] = [];
  try {
    const metricsPort = freePortPair();
    const env = {
      DATABASE_PATH: join(dir.path, "shared.db"),
      PORT: String(freePort()),
      METRICS_PORT: `${metricsPort}-${metricsPort + 1}`,
      LOG_LEVEL: "info",
    };
    // The first start migrates; the second then starts on a migrated file with the same env.
    services.push(await startService(env));
    services.push(await startService(env));
    const [a, b] = services.map(metricsUrl);
    expect(a!.port).toBe(String(metricsPort));
    expect(b!.port).toBe(String(metricsPort + 1));
    // One shared main port, as reusePort allows.
    expect(services[0]!.url.port).toBe(env.PORT);
    expect(services[1]!.url.port).toBe(env.PORT);

    // The main port no longer serves /metrics.
    expect((await fetch(new URL("/metrics", services[0]!.url))).status).toBe(404);

    const total = 60;
    const statuses = await Promise.all(
      Array.from({ length: total }, async () => {
        const response = await fetch(new URL("/health", services[0]!.url));
        await response.arrayBuffer();
        return response.status;
      }),
    );
    expect(statuses.every((s) => s === 200)).toBe(true);

    const scraped = await Promise.all(
      [a!, b!].map(async (url) => {
        const response = await fetch(url);
        expect(response.status).toBe(200);
        return response.text();
      }),
    );
    // Each listener is a different process (its own counters), and together they count every
    // request the shared port answered, once.
    expect(healthCount(scraped[0]!) + healthCount(scraped[1]!)).toBe(total);

    // A third process with the same environment finds the range taken and refuses to start.
    const third = await runToExit(["bun", "run", "src/index.ts"], env);
    expect(third.code).toBe(2);
    const refusals = third.stderr.split("\n").filter((line) => line.startsWith("palisade:"));
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toStartWith(
      `palisade: refusing to start: METRICS_PORT ${env.METRICS_PORT}: no port could be bound (`,
    );
  } finally {
    await Promise.all(services.map((s) => s.stop("SIGKILL")));
    dir.remove();
  }
}, 60_000);

test("production with /metrics open exits 2 with one line naming METRICS_TOKEN", async () => {
  const dir = tempDir();
  try {
    const env = {
      ...PRODUCTION_ENV,
      METRICS_TOKEN: "",
      DATABASE_PATH: join(dir.path, "p.db"),
    };
    const result = await runToExit(["bun", "run", "src/index.ts"], env);
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      "palisade: refusing to start: METRICS_TOKEN is required when APP_ENV=production, unless METRICS_PORT puts /metrics on a loopback listener of its own",
    );
    // The same production start with a loopback listener of its own serves, and scrapes work there.
    const service = await startService({
      ...env,
      METRICS_PORT: String(freePort()),
    });
    try {
      // The Host check applies to scrapes too: Prometheus names a host ALLOWED_HOSTS lists.
      const response = await fetch(metricsUrl(service), { headers: { host: "localhost" } });
      expect(response.status).toBe(200);
      expect(await response.text()).toContain("http_requests_in_flight");
    } finally {
      await service.stop();
    }
  } finally {
    dir.remove();
  }
}, 30_000);
