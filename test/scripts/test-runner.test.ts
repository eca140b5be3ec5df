/**
 * `bun run test` (scripts/test.ts): a worker count it cannot use is refused in one line, before any
 * test runs.
 */
import { expect, test } from "bun:test";
import { runToExit } from "../support/process";

test("TEST_WORKERS that is not a whole number of 1 or more is refused, naming it, and nothing runs", async () => {
  for (const value of ["0", "-1", "two", "1.5"]) {
    const run = await runToExit(["bun", "run", "scripts/test.ts", "test/retry-after.test.ts"], {
      TEST_WORKERS: value,
    });
    expect({ value, code: run.code, stderr: run.stderr, stdout: run.stdout }).toEqual({
      value,
      code: 2,
      stderr: `test: TEST_WORKERS must be a whole number of 1 or more, not ${value}\n`,
      stdout: "",
    });
  }
}, 30_000);
