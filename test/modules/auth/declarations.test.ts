import { afterEach, expect, test } from "bun:test";
import { AUTH_DETAIL_KEY } from "../../../src/plugins/auth";
import { DOCS_PATH, OPENAPI_PATH } from "../../../src/plugins/openapi";
import { buildTestApp, send, type TestApp } from "../../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

// The OpenAPI plugin's own routes cannot take our macros; they serve the public API description.
const FRAMEWORK_ROUTES = new Set([`GET ${DOCS_PATH}`, `GET ${OPENAPI_PATH}`]);

test("every registered route declares who may call it", () => {
  current = buildTestApp();
  const undeclared = current.app.routes
    .filter((route) => !FRAMEWORK_ROUTES.has(`${route.method} ${route.path}`))
    .filter((route) => {
      const detail = route.hooks?.detail as Record<string, unknown> | undefined;
      const declared = detail?.[AUTH_DETAIL_KEY];
      return typeof declared !== "string" || declared === "undeclared";
    })
    .map((route) => `${route.method} ${route.path}`);
  expect(undeclared).toEqual([]);
  // And the walk sees real routes, so an empty result means something.
  expect(current.app.routes.length).toBeGreaterThan(15);
});

test("a route added without a declaration is caught by the same walk", () => {
  current = buildTestApp();
  const app = current.app.get("/test/forgotten", () => "oops");
  const route = app.routes.find((r) => r.path === "/test/forgotten")!;
  const detail = route.hooks?.detail as Record<string, unknown> | undefined;
  expect(detail?.[AUTH_DETAIL_KEY]).toBeUndefined();
});

test("the OpenAPI document states each route's requirement", async () => {
  current = buildTestApp();
  const document = (await (await send(current, OPENAPI_PATH)).json()) as {
    paths: Record<string, Record<string, Record<string, unknown>>>;
  };
  expect(document.paths["/api/admin/api-keys"]!.post![AUTH_DETAIL_KEY]).toBe("role:admin");
  expect(document.paths["/api/auth/login"]!.post![AUTH_DETAIL_KEY]).toBe("public");
  expect(document.paths["/api/me/export"]!.get!.security).toEqual([
    { bearerAuth: [] },
    { sessionCookie: [] },
  ]);
});
