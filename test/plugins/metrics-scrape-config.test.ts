/**
 * The shipped scrape configuration keeps working once /metrics needs a token: Prometheus sends the
 * same Docker secret as a bearer token that compose.yaml gives Palisade as METRICS_TOKEN_FILE, and
 * Palisade accepts a token read that way (trailing newline and all).
 */
import { afterEach, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildTestApp, send, type TestApp, tempDir } from "../support/app";
import { REPO_ROOT } from "../support/process";

interface ScrapeJob {
  job_name: string;
  metrics_path?: string;
  authorization?: { type?: string; credentials_file?: string };
  static_configs: { targets: string[] }[];
}

interface Compose {
  services: Record<string, { environment?: Record<string, string>; secrets?: string[] }>;
  secrets: Record<string, { file: string }>;
}

const yaml = (path: string) => Bun.YAML.parse(readFileSync(join(REPO_ROOT, path), "utf8"));

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("prometheus.yml sends the metrics_token secret that compose.yaml gives Palisade", () => {
  const prometheus = yaml("grafana/prometheus.yml") as { scrape_configs: ScrapeJob[] };
  const compose = yaml("compose.yaml") as Compose;
  const job = prometheus.scrape_configs.find((j) => j.job_name === "palisade")!;
  expect(job.metrics_path).toBe("/metrics");
  expect(job.authorization?.type).toBe("Bearer");
  const file = job.authorization?.credentials_file ?? "";
  const secret = /^\/run\/secrets\/([a-z_]+)$/.exec(file)?.[1];
  expect(secret).toBe("metrics_token");
  expect(compose.secrets[secret!]).toBeDefined();
  expect(compose.services.prometheus!.secrets).toContain(secret!);
  expect(compose.services.palisade!.secrets).toContain(secret!);
  expect(compose.services.palisade!.environment!.METRICS_TOKEN_FILE).toBe(file);
});

test("a token read from METRICS_TOKEN_FILE is what the scrape must send", async () => {
  const dir = tempDir();
  try {
    const token = "5f0c3e9a7b2d41e68c9f0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678901";
    const path = join(dir.path, "metrics_token");
    writeFileSync(path, `${token}\n`);
    current = buildTestApp({ env: { METRICS_TOKEN_FILE: path } });
    expect((await send(current, "/metrics")).status).toBe(401);
    const scraped = await send(current, "/metrics", {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(scraped.status).toBe(200);
  } finally {
    dir.remove();
  }
});
