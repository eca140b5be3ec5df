/**
 * Starts a real redis-server (Debian's, installed by .ci/run) on a free loopback port. Where it is
 * not installed the Redis tests are skipped — except in CI (CI=true), where that is a failure.
 */
import { RedisClient } from "bun";
import { freePort } from "./process";

export const redisAvailable = Bun.which("redis-server") !== null;

if (!redisAvailable && process.env.CI === "true") {
  throw new Error("redis-server is not installed; .ci/run installs it with apt-get");
}

export interface RedisServer {
  url: string;
  stop(): Promise<void>;
  /** Stops the server answering, connections left open (SIGSTOP): a stalled Redis. */
  pause(): void;
  resume(): void;
}

/**
 * `settings`: more of redis-server's own arguments (`["--maxmemory-policy", "allkeys-lru"]`);
 * `port`: a free one when absent (a test restarting Redis gives the port it had).
 */
export async function startRedis(
  settings: readonly string[] = [],
  port = freePort(),
): Promise<RedisServer> {
  const proc = Bun.spawn(
    [
      "redis-server",
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      ...settings,
    ],
    { stdout: "ignore", stderr: "ignore" },
  );
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const client = new RedisClient(url, { autoReconnect: false, connectionTimeout: 500 });
    try {
      await client.send("PING", []);
      client.close();
      break;
    } catch (error) {
      client.close();
      if (Date.now() > deadline) {
        proc.kill("SIGKILL");
        throw new Error(`redis-server did not start on ${port}: ${error}`);
      }
      await Bun.sleep(50);
    }
  }
  return {
    url,
    async stop() {
      proc.kill("SIGCONT");
      proc.kill("SIGTERM");
      await proc.exited;
    },
    pause() {
      proc.kill("SIGSTOP");
    },
    resume() {
      proc.kill("SIGCONT");
    },
  };
}
