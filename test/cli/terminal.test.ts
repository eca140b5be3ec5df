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

/**
 * What `keys:list` prints for a database holding one key of this name: written into the file, as
 * the API and the CLI refuse such names (and redact credentials in them) since probe 38a F1, but a
 * file from before, or edited, may hold one.
 */
async function keysListedWithName(name: string) {
  const target = buildTestApp();
  apps.push(target);
  const { record } = target.services.apiKeys.create(
    { name: "plain", scopes: ["chat"], userId: null },
    "test",
  );
  target.db.$client.query("UPDATE api_keys SET name = ? WHERE id = ?").run(name, record.id);
  return cliInProcess(["keys:list"], { DATABASE_PATH: target.databasePath });
}

test("control characters and line breaks are spelt out; text and tabs are kept", () => {
  expect(terminalSafe("plain text, ünïcode ✓")).toBe("plain text, ünïcode ✓");
  expect(terminalSafe("a\tb\nc")).toBe("a\tb\\x0ac");
  expect(terminalSafe("\u001b[2J\u001b[31mFAKE\r\u0007")).toBe("\\x1b[2J\\x1b[31mFAKE\\x0d\\x07");
  expect(terminalSafe("\u009b31m\u007f\u0000")).toBe("\\x9b31m\\x7f\\x00");
});

test("the characters that break or reorder a line are spelt out too; other Unicode is kept", () => {
  expect(terminalSafe("key\u202eadmin\u2028x\u2029y\u2066z\u200f")).toBe(
    "key\\u202eadmin\\u2028x\\u2029y\\u2066z\\u200f",
  );
  expect(terminalSafe("שלום مرحبا ✓")).toBe("שלום مرحبا ✓");
});

test("a key name with a right-to-left override is listed spelt out by keys:list", async () => {
  const listed = await keysListedWithName("ops\u202e gnisu");
  expect(listed.code).toBe(0);
  expect(listed.stdout).toContain("ops\\u202e gnisu");
  expect(listed.stdout).not.toContain("\u202e");
});

test("a key name a client chose with escape sequences is listed escaped by keys:list", async () => {
  const listed = await keysListedWithName("\u001b[2J\u001b[31mFAKE ALERT");
  expect(listed.code).toBe(0);
  expect(listed.stdout).toContain("\\x1b[2J\\x1b[31mFAKE ALERT");
  expect(listed.stdout).not.toContain("\u001b");
});

test("a key name holding a line break cannot print a line of its own", async () => {
  const listed = await keysListedWithName("k3\n0190  pal_live_fake  k2  admin  revoked");
  expect(listed.stdout.split("\n")).toHaveLength(1);
  expect(listed.stdout).toContain("k3\\x0a0190  pal_live_fake");
});

test("rows written into the file with a time that is none, or a BLOB for text, are listed as the file holds them by keys:list and audit:tail: every row, exit 0 (probe 46b F2)", async () => {
  const target = buildTestApp();
  apps.push(target);
  const keys = target.services.apiKeys;
  const made = ["first", "second", "third"].map(
    (name) => keys.create({ name, scopes: ["chat"], userId: null }, "test").record.id,
  );
  const sqlite = target.db.$client;
  sqlite.query("UPDATE api_keys SET expires_at = 'soon' WHERE id = ?").run(made[0]!);
  sqlite.query("UPDATE api_keys SET last_used_at = 1e300 WHERE id = ?").run(made[1]!);
  sqlite.query("UPDATE api_keys SET name = X'6869' WHERE id = ?").run(made[2]!);
  const env = { DATABASE_PATH: target.databasePath };
  const listed = await cliInProcess(["keys:list"], env);
  expect(listed.code).toBe(0);
  const lines = listed.stdout.split("\n");
  expect(lines).toHaveLength(3);
  expect(lines.find((line) => line.startsWith(made[0]!))).toContain("expires soon");
  expect(lines.find((line) => line.startsWith(made[1]!))).toContain("last used 1e+300");
  expect(lines.find((line) => line.startsWith(made[2]!))).toContain(" hi ");

  target.services.audit.flush();
  const insert = sqlite.prepare(
    "INSERT INTO audit_events (at, type, actor, ip, route, request_id, outcome, detail, subject_salt, subject_commit, prev_hash, hash) VALUES (?, 'auth.logout', NULL, NULL, NULL, NULL, 'success', ?, NULL, 'c', 'p', 'h')",
  );
  insert.run("x", "{}");
  insert.run(1e300, new Uint8Array([123, 125]));
  const tail = await cliInProcess(["audit:tail", "--limit", "100"], env);
  expect(tail.code).toBe(0);
  const forged = tail.stdout.split("\n").filter((row) => row.includes("auth.logout"));
  // Marked as the admin API marks them (probe 84j F3); the rows Palisade wrote are not.
  const mark =
    "  TAMPERED (does not match its hash: changed in the database file; see audit:verify)";
  expect(forged.sort()).toEqual([
    `1e+300  auth.logout  success  actor=-  ip=-  route=-  request=-  {}${mark}`,
    `x  auth.logout  success  actor=-  ip=-  route=-  request=-  {}${mark}`,
  ]);
  const genuine = tail.stdout.split("\n").filter((row) => !row.includes("auth.logout"));
  expect(genuine.length).toBeGreaterThan(0);
  expect(genuine.filter((row) => row.includes("TAMPERED"))).toEqual([]);
  const json = await cliInProcess(["audit:tail", "--limit", "100", "--json"], env);
  const marks = json.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as { type: string; tampered: boolean })
    .map((row) => [row.type, row.tampered]);
  expect(marks.filter(([type]) => type === "auth.logout")).toEqual([
    ["auth.logout", true],
    ["auth.logout", true],
  ]);
  expect(marks.filter(([type, tampered]) => type !== "auth.logout" && tampered)).toEqual([]);
});

test("--json lines stay JSON a parser reads when the file holds DEL or C1 controls, still with no control character (probe 82a F4)", async () => {
  const target = buildTestApp();
  apps.push(target);
  await target.services.auth.register("victim@example.com", "a-long-pass-phrase-0193", null);
  const sqlite = target.db.$client;
  sqlite.run("UPDATE users SET email = ? WHERE email = 'victim@example.com'", [
    "vic\u007ftim\u009b31m\u0085@example.com",
  ]);
  target.services.audit.record({
    type: "admin.blocks.listed",
    outcome: "success",
    actor: "system",
    detail: { reason: "x" },
  });
  target.services.audit.flush();
  sqlite.run("UPDATE audit_events SET detail = ? WHERE id = (SELECT max(id) FROM audit_events)", [
    JSON.stringify({ x: "\u0085\u007f" }),
  ]);
  const env = { DATABASE_PATH: target.databasePath };
  for (const argv of [
    ["users:list", "--json"],
    ["audit:tail", "--json"],
  ]) {
    const listed = await cliInProcess(argv, env);
    expect(listed.code).toBe(0);
    const controls = [...listed.stdout].filter((character) => {
      const code = character.charCodeAt(0);
      return (code < 0x20 && code !== 0x09 && code !== 0x0a) || (code >= 0x7f && code <= 0x9f);
    });
    expect(controls).toEqual([]);
    const rows = listed.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const text = JSON.stringify(rows);
    expect(text).toContain(
      argv[0] === "users:list" ? "vic\u007ftim\u009b31m\u0085@" : "\u0085\u007f",
    );
  }
});
