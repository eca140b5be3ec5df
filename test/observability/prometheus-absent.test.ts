/**
 * The Prometheus proof on a machine without Debian's Prometheus tools: a new user's `bun test`
 * skips it and passes, while CI (`CI=true`) fails, both from the test file itself and from
 * `bun run test` (scripts/test.ts) before any test runs. The tools are hidden by running Bun with a
 * PATH that holds nothing but Bun itself.
 */
import { afterAll, expect, test } from "bun:test";
import { symlinkSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "../support/app";
import { runToExit } from "../support/process";

const bin = tempDir("palisade-no-prometheus-");
symlinkSync(process.execPath, join(bin.path, "bun"));
afterAll(() => bin.remove());

/** No CI variable unless given: the parent's (set in CI) must not leak into the "new user" run. */
const withoutTools = (extra: Record<string, string> = {}) => ({ PATH: bin.path, ...extra });

const PROOF = "test/observability/prometheus.test.ts";

test("without prometheus the proof is skipped and `bun test` passes", async () => {
  const run = await runToExit(["bun", "test", PROOF], withoutTools());
  const output = `${run.stdout}${run.stderr}`;
  expect({ code: run.code, output }).toEqual({
    code: 0,
    output: expect.stringMatching(/\d+ skip/),
  });
  expect(output).toMatch(/\b0 pass\b/);
  expect(output).toMatch(/\b0 fail\b/);
}, 30_000);

test("without prometheus under CI=true the proof fails, naming what to install", async () => {
  const run = await runToExit(["bun", "test", PROOF], withoutTools({ CI: "true" }));
  expect(run.code).not.toBe(0);
  expect(`${run.stdout}${run.stderr}`).toContain(
    "prometheus, promtool, amtool, prometheus-alertmanager not installed",
  );
}, 30_000);

test("without prometheus under CI=true `bun run test` refuses before running anything", async () => {
  const run = await runToExit(["bun", "run", "scripts/test.ts"], withoutTools({ CI: "true" }));
  expect(run.code).toBe(1);
  // redis-server is hidden too (the PATH holds only Bun), so it leads the list.
  expect(run.stderr).toMatch(
    /^test: (redis-server, )?prometheus, promtool, amtool, prometheus-alertmanager not installed; CI needs it/m,
  );
  expect(run.stdout).not.toContain(" pass");
}, 30_000);
