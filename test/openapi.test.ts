import { afterEach, expect, test } from "bun:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { DOCS_PATH } from "../src/plugins/openapi";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "./support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const toOpenApiPath = (path: string) => path.replace(/:(\w+)\??/g, "{$1}");

test("GET /openapi.json is a valid OpenAPI 3 document", async () => {
  current = buildTestApp();
  const response = await send(current, "/openapi.json");
  expect(response.status).toBe(200);
  const document = (await response.json()) as { openapi: string; info: { title: string } };
  expect(document.openapi).toStartWith("3.");
  expect(document.info.title).toBe("Palisade");
  const validator = new Validator();
  const result = await validator.validate(document as Parameters<Validator["validate"]>[0]);
  expect(result.errors ?? []).toEqual([]);
  expect(result.valid).toBe(true);
});

test("every registered route is in the document", async () => {
  current = buildTestApp();
  const response = await send(current, "/openapi.json");
  const document = (await response.json()) as { paths: Record<string, Record<string, unknown>> };
  const missing = current.app.routes
    .filter((route) => route.path !== DOCS_PATH)
    .filter((route) => !document.paths[toOpenApiPath(route.path)]?.[route.method.toLowerCase()])
    .map((route) => `${route.method} ${route.path}`);
  expect(missing).toEqual([]);
  expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(["/health", "/ready"]));
});

test("/docs renders outside production and is absent in production", async () => {
  current = buildTestApp();
  const docs = await send(current, "/docs");
  expect(docs.status).toBe(200);
  expect(docs.headers.get("content-type")).toContain("text/html");
  current.close();

  current = buildTestApp({
    env: PRODUCTION_ENV,
  });
  expect((await send(current, "/docs")).status).toBe(404);
  expect((await send(current, "/openapi.json")).status).toBe(200);
});
