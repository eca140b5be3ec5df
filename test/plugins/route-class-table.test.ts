/**
 * The table's lookup by method: exact routes per method, and each method's own list of patterns
 * (its own and the `*` ones, in the table's order). Every method must get the class it got from
 * one list scanned in order.
 */
import { expect, test } from "bun:test";
import { createRouteClassTable, UNMATCHED_CLASS } from "../../src/plugins/route-class";

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"];

test("exact routes are told apart by method; HEAD is GET; a trailing slash is folded", () => {
  const table = createRouteClassTable([
    { routes: ["GET /a"], policy: "privacy" },
    { routes: ["POST /a"], policy: "login" },
  ]);
  expect(table.classify("GET", "/a").policy).toBe("privacy");
  expect(table.classify("HEAD", "/a/").policy).toBe("privacy");
  expect(table.classify("POST", "/a").policy).toBe("login");
  expect(table.classify("PUT", "/a")).toBe(UNMATCHED_CLASS);
  expect(table.classify("POST", "/b")).toBe(UNMATCHED_CLASS);
});

test.each([
  ["the * pattern first", ["* /x/:id", "GET /x/:id"], ["star", "get"]],
  ["the GET pattern first", ["GET /x/:id", "* /x/:id"], ["get", "star"]],
])(
  "with %s, the first declared pattern that matches wins, for every method",
  (_l, order, names) => {
    const classes = order.map((route) => ({
      routes: [route],
      policy: route.startsWith("*") ? ("login" as const) : ("privacy" as const),
    }));
    const table = createRouteClassTable([
      ...classes,
      { routes: ["POST /x/*"], policy: "payments" },
      { routes: ["DELETE /x/:id/y"], policy: "chat" },
    ]);
    const star = "login";
    const get = "privacy";
    const first = names[0] === "star" ? star : get;
    for (const method of METHODS) {
      const expected = method === "GET" || method === "HEAD" ? first : star;
      expect({ method, policy: table.classify(method, "/x/1").policy }).toEqual({
        method,
        policy: expected,
      });
    }
    // Longer paths: the prefix for POST only, the longer pattern for DELETE only.
    expect(table.classify("POST", "/x/1/2").policy).toBe("payments");
    expect(table.classify("GET", "/x/1/2")).toBe(UNMATCHED_CLASS);
    expect(table.classify("DELETE", "/x/1/y").policy).toBe("chat");
    expect(table.classify("PROPFIND", "/x/1/y")).toBe(UNMATCHED_CLASS);
    expect(table.classify("PROPFIND", "/x/")).toBe(UNMATCHED_CLASS);
  },
);

test("a table without patterns, or with only another method's, leaves the rest unmatched", () => {
  expect(createRouteClassTable([{ routes: ["GET /a"] }]).classify("GET", "/b")).toBe(
    UNMATCHED_CLASS,
  );
  const table = createRouteClassTable([{ routes: ["GET /a/:id"], policy: "privacy" }]);
  expect(table.classify("GET", "/a/1").policy).toBe("privacy");
  expect(table.classify("POST", "/a/1")).toBe(UNMATCHED_CLASS);
});
