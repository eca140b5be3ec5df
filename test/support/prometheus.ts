/**
 * Debian's real Prometheus tools (`prometheus`, `promtool`, and `amtool` from
 * prometheus-alertmanager; .ci/run installs them): a Prometheus server on a free loopback port
 * built from the shipped grafana/prometheus.yml, and the checkers. Where a tool is not installed
 * its tests are skipped, except in CI (CI=true), where that is a failure, as for Redis.
 */
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, REPO_ROOT, runToExit } from "./process";

export const prometheusAvailable = Bun.which("prometheus") !== null;
export const promtoolAvailable = Bun.which("promtool") !== null;
export const amtoolAvailable = Bun.which("amtool") !== null;
/** Debian names the Alertmanager binary prometheus-alertmanager. */
export const alertmanagerAvailable = Bun.which("prometheus-alertmanager") !== null;

if (process.env.CI === "true") {
  const missing = [
    ["prometheus", prometheusAvailable],
    ["promtool", promtoolAvailable],
    ["amtool", amtoolAvailable],
    ["prometheus-alertmanager", alertmanagerAvailable],
  ].filter(([, available]) => !available);
  if (missing.length > 0) {
    throw new Error(
      `${missing.map(([name]) => name).join(", ")} not installed; .ci/run installs prometheus and prometheus-alertmanager with apt-get`,
    );
  }
}

export const GRAFANA_DIR = join(REPO_ROOT, "grafana");

interface ScrapeConfig {
  job_name: string;
  scrape_interval?: string;
  authorization?: { type?: string; credentials_file?: string };
  static_configs: { targets: string[] }[];
}
interface PrometheusConfig {
  global: Record<string, string>;
  rule_files: string[];
  alerting?: unknown;
  scrape_configs: ScrapeConfig[];
}

/**
 * The shipped grafana/prometheus.yml, written into `dir` beside a copy of alerts.yml, with only
 * what belongs to the machine replaced: the target, the token file's path, and (for the test) a
 * 1 s interval and no Alertmanager. Everything else — the job, the bearer authorization, the rule
 * file — is the shipped configuration.
 */
export function localPrometheusConfig(
  dir: string,
  options: {
    target: string;
    token: string;
    /** An existing token file (as `openssl rand -hex 32 >` writes it, newline included). */
    tokenFile?: string;
    intervalSeconds?: number;
    /** Keep the shipped alerting section; with `alertmanager`, pointed at that host:port. */
    alerting?: boolean;
    alertmanager?: string;
    /** More rule files (absolute paths), after the shipped ones. */
    extraRuleFiles?: string[];
  },
): string {
  const shipped = Bun.YAML.parse(
    readFileSync(join(GRAFANA_DIR, "prometheus.yml"), "utf8"),
  ) as PrometheusConfig;
  const interval = `${options.intervalSeconds ?? 1}s`;
  const tokenFile = options.tokenFile ?? join(dir, "metrics_token");
  if (!options.tokenFile) writeFileSync(tokenFile, `${options.token}\n`, { mode: 0o600 });
  for (const rules of shipped.rule_files) copyFileSync(join(GRAFANA_DIR, rules), join(dir, rules));
  const [job] = shipped.scrape_configs;
  if (!job?.authorization?.credentials_file) {
    throw new Error("grafana/prometheus.yml scrapes without a bearer credentials_file");
  }
  job.authorization.credentials_file = tokenFile;
  job.static_configs = [{ targets: [options.target] }];
  shipped.global = { ...shipped.global, scrape_interval: interval, evaluation_interval: interval };
  if (options.alertmanager) {
    const alerting = shipped.alerting as {
      alertmanagers: { static_configs: { targets: string[] }[] }[];
    };
    alerting.alertmanagers[0]!.static_configs = [{ targets: [options.alertmanager] }];
  } else if (!options.alerting) {
    delete shipped.alerting;
  }
  shipped.rule_files = [...shipped.rule_files, ...(options.extraRuleFiles ?? [])];
  const path = join(dir, "prometheus.yml");
  writeFileSync(path, Bun.YAML.stringify(shipped, null, 2));
  return path;
}

export interface PrometheusServer {
  url: URL;
  /** Runs an instant query; throws on an error status. */
  query(expr: string): Promise<{ resultType: string; result: unknown[] }>;
  stop(): Promise<void>;
  logs(): string;
}

export async function startPrometheus(
  configPath: string,
  dataDir: string,
): Promise<PrometheusServer> {
  const { url, proc, logs } = await spawnUntilReady("prometheus", (port) => [
    `--config.file=${configPath}`,
    `--storage.tsdb.path=${dataDir}`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ]);
  return {
    url,
    async query(expr) {
      const response = await fetch(new URL(`/api/v1/query?query=${encodeURIComponent(expr)}`, url));
      const body = (await response.json()) as {
        status: string;
        error?: string;
        data: { resultType: string; result: unknown[] };
      };
      if (body.status !== "success") throw new Error(`${expr}: ${body.error}`);
      return body.data;
    },
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
    logs: () => logs.join(""),
  };
}

export interface AlertmanagerServer {
  url: URL;
  stop(): Promise<void>;
  logs(): string;
}

/** Debian's Alertmanager on a free loopback port, clustering off. */
export async function startAlertmanager(
  configPath: string,
  dataDir: string,
): Promise<AlertmanagerServer> {
  const { url, proc, logs } = await spawnUntilReady("prometheus-alertmanager", (port) => [
    `--config.file=${configPath}`,
    `--storage.path=${dataDir}`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--cluster.listen-address=",
    "--log.level=warn",
  ]);
  return {
    url,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
    logs: () => logs.join(""),
  };
}

/** Starts `tool` on a free loopback port and waits (20 s at most) until its `/-/ready` answers. */
async function spawnUntilReady(tool: string, args: (port: number) => string[]) {
  const port = freePort();
  const proc = Bun.spawn([tool, ...args(port)], { stdout: "pipe", stderr: "pipe" });
  const logs: string[] = [];
  const decoder = new TextDecoder();
  (async () => {
    for await (const chunk of proc.stderr) logs.push(decoder.decode(chunk));
  })();
  const url = new URL(`http://127.0.0.1:${port}`);
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await fetch(new URL("/-/ready", url))).ok) break;
    } catch {
      // not listening yet
    }
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`${tool} did not start:\n${logs.join("")}`);
    }
    await Bun.sleep(100);
  }
  return { url, proc, logs };
}

/** A promtool or amtool check: its exit code and what it printed. */
export function check(tool: "promtool" | "amtool", args: string[], stdin?: string) {
  return runToExit([tool, ...args], {}, stdin);
}
