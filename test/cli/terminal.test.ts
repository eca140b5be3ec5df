/**
 * What the CLI prints reaches an operator's terminal: text that came from clients or from the
 * database file never carries a control sequence there.
 */
import { afterEach, expect, test } from "bun:test";
import { terminalSafe } from "../../src/cli/terminal";
import { buildTestApp, type TestApp } from "../support/app";
import { cliInProcess } from "../support/cli";

const apps: TestApp[] = [];
afterEach(() => {
  for (const app of apps.splice(0)) app.close();
});

test("control characters are spelt out; text, tabs and line breaks are kept", () => {
  expect(terminalSafe("plain text, ünïcode ✓")).toBe("plain text, ünïcode ✓");
  expect(terminalSafe("a\tb\nc")).toBe("a\tb\nc");
  expect(terminalSafe("\u001b[2J\u001b[31mFAKE\r\u0007")).toBe("\\x1b[2J\\x1b[31mFAKE\\x0d\\x07");
  expect(terminalSafe("\u009b31m\u007f\u0000")).toBe("\\x9b31m\\x7f\\x00");
});

test("a key name a client chose with escape sequences is listed escaped by keys:list", async () => {
  const target = buildTestApp();
  apps.push(target);
  target.services.apiKeys.create(
    { name: "\u001b[2J\u001b[31mFAKE ALERT", scopes: ["chat"], userId: null },
    "test",
  );
  const listed = await cliInProcess(["keys:list"], { DATABASE_PATH: target.databasePath });
  expect(listed.code).toBe(0);
  expect(listed.stdout).toContain("\\x1b[2J\\x1b[31mFAKE ALERT");
  expect(listed.stdout).not.toContain("\u001b");
});
