/**
 * Statements are prepared by their first use, not at start (issue #13). A lazily prepared
 * statement must behave as one prepared at start: the same statement every time, on its own
 * service's database only, and a preparation that failed is tried again rather than remembered.
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { preparedOnUse } from "../../src/db/prepared-on-use";
import { buildTestApp, send, type TestApp } from "../support/app";
import { STRONG_PASSWORD, signUp } from "../support/auth";

const open: TestApp[] = [];
afterEach(() => {
  for (const target of open.splice(0)) target.close();
});

test("a statement is prepared at its first use, once, and is the same statement after", () => {
  const sqlite = new Database(":memory:");
  let prepared = 0;
  const statements = preparedOnUse({
    one: () => {
      prepared++;
      return sqlite.prepare("SELECT 1 AS n");
    },
    two: () => {
      prepared++;
      return sqlite.prepare("SELECT 2 AS n");
    },
  });
  expect(prepared).toBe(0);
  const first = statements.one;
  expect(first.get()).toEqual({ n: 1 });
  expect(statements.one).toBe(first);
  expect(prepared).toBe(1);
  expect(statements.two.get()).toEqual({ n: 2 });
  expect(prepared).toBe(2);
  expect(Object.keys(statements)).toEqual(["one", "two"]);
  sqlite.close();
});

test("a statement that could not be prepared is prepared again by the next use", () => {
  const sqlite = new Database(":memory:");
  const statements = preparedOnUse({ later: () => sqlite.prepare("SELECT x FROM later") });
  expect(() => statements.later).toThrow(/no such table/);
  sqlite.run("CREATE TABLE later (x INTEGER)");
  sqlite.run("INSERT INTO later VALUES (7)");
  expect(statements.later.get()).toEqual({ x: 7 });
  sqlite.close();
});

test("two apps on two databases each prepare their own statements: an account of one is not in the other", async () => {
  const first = buildTestApp();
  const second = buildTestApp();
  open.push(first, second);
  const { email } = await signUp(first);
  const login = (target: TestApp) =>
    send(target, "/api/auth/login", { body: { email, password: STRONG_PASSWORD } });
  expect((await login(second)).status).toBe(401);
  expect((await login(first)).status).toBe(200);
  expect((await login(second)).status).toBe(401);
});
