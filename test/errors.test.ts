import { afterEach, describe, expect, test } from "bun:test";
import { t } from "elysia";
import { AppError, ERROR_CODES, statusForCode } from "../src/errors";
import { buildTestApp, send, type TestApp } from "./support/app";
import { bearer, signUp } from "./support/auth";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function appWithRoutes() {
  current = buildTestApp();
  const app = current.app
    .post("/test/items", ({ body }) => ({ received: body.name }), {
      body: t.Object({
        name: t.String({ minLength: 2 }),
        quantity: t.Integer({ minimum: 1 }),
        email: t.String({ format: "email" }),
      }),
    })
    .get("/test/items/:id", ({ params }) => ({ id: params.id }))
    .get("/test/conflict", () => {
      throw new AppError("CONFLICT", "That item already exists.");
    })
    .get("/test/unavailable", () => {
      throw new AppError("SERVICE_UNAVAILABLE", "Down for now.");
    })
    .get("/test/shedding", () => {
      throw new AppError("SERVICE_UNAVAILABLE", "Busy; retry shortly.", undefined, {
        "retry-after": "2",
      });
    })
    .get("/test/boom", () => {
      throw new Error(`database password is ${current!.config.jwt.secretKey} at /srv/app.ts:12`);
    });
  return { ...current, app };
}

async function problemOf(response: Response) {
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  const requestId = response.headers.get("x-request-id");
  expect(requestId).toBeTruthy();
  const body = (await response.json()) as Record<string, unknown>;
  expect(body.requestId).toBe(requestId!);
  expect(body.status).toBe(response.status);
  expect(body.type).toBe(
    `urn:palisade:problem:${String(body.code).toLowerCase().replaceAll("_", "-")}`,
  );
  return body;
}

describe("problem+json", () => {
  test("an unknown route is 404 NOT_FOUND", async () => {
    const target = appWithRoutes();
    const response = await send(target, "/no/such/route");
    expect(response.status).toBe(404);
    const body = await problemOf(response);
    expect(body.code).toBe("NOT_FOUND");
    expect(body.title).toBe("Not found");
  });

  test("a known path with the wrong method is 405 with Allow", async () => {
    const target = appWithRoutes();
    const response = await send(target, "/test/items/42", { method: "DELETE" });
    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBe("GET, HEAD");
    expect((await problemOf(response)).code).toBe("METHOD_NOT_ALLOWED");

    const onPostRoute = await send(target, "/test/items", { method: "PUT" });
    expect(onPostRoute.status).toBe(405);
    expect(onPostRoute.headers.get("allow")).toBe("POST");
  });

  test("a validation failure lists each failing field without echoing values", async () => {
    const target = appWithRoutes();
    const response = await send(target, "/test/items", {
      body: { name: "x", quantity: 0, email: "secret-value-not-an-email" },
    });
    expect(response.status).toBe(422);
    const body = await problemOf(response);
    expect(body.code).toBe("VALIDATION_FAILED");
    const fields = (body.errors as { field: string; message: string }[]).map((e) => e.field);
    expect(fields).toEqual(expect.arrayContaining(["body/name", "body/quantity", "body/email"]));
    expect(JSON.stringify(body)).not.toContain("secret-value-not-an-email");
  });

  test("a value of the wrong type is not echoed either, whatever its type (probe 32c F2)", async () => {
    const target = appWithRoutes();
    for (const name of [4111111111111111, 98765432101, true, 1e300, { card: "4242424242424242" }]) {
      const response = await send(target, "/test/items", {
        body: { name, quantity: 1, email: "a@example.test" },
      });
      expect(response.status).toBe(422);
      const body = await problemOf(response);
      expect(body.errors).toEqual([{ field: "body/name", message: expect.any(String) }]);
      const text = JSON.stringify(body);
      expect(text).not.toContain("found");
      for (const sent of [
        "4111111111111111",
        "98765432101",
        "true",
        "1e+300",
        "4242424242424242",
      ]) {
        expect(text).not.toContain(sent);
      }
    }
    // The app's own routes answer the same way: the email of a sign-up sent as a number.
    const signUp = await send(target, "/api/auth/register", {
      body: { email: 123456789012345, password: "violet-Harbor-quantum-73!" },
    });
    expect(signUp.status).toBe(422);
    expect(await signUp.text()).not.toContain("123456789012345");
  });

  test("a missing field is named", async () => {
    const target = appWithRoutes();
    const response = await send(target, "/test/items", { body: { name: "widget", quantity: 2 } });
    const body = await problemOf(response);
    expect(body.errors).toEqual([{ field: "body/email", message: expect.any(String) }]);
  });

  test("a body that is not JSON is 400 MALFORMED_BODY", async () => {
    const target = appWithRoutes();
    const response = await send(target, "/test/items", { body: "{not json" });
    expect(response.status).toBe(400);
    expect((await problemOf(response)).code).toBe("MALFORMED_BODY");
  });

  test("an AppError keeps its code, status and detail", async () => {
    const target = appWithRoutes();
    const response = await send(target, "/test/conflict");
    expect(response.status).toBe(409);
    const body = await problemOf(response);
    expect(body).toMatchObject({ code: "CONFLICT", detail: "That item already exists." });
  });

  test("a thrown error is INTERNAL with no message or stack, and is logged with its stack", async () => {
    const target = appWithRoutes();
    const response = await send(target, "/test/boom");
    expect(response.status).toBe(500);
    const text = await response.clone().text();
    const body = await problemOf(response);
    expect(body.code).toBe("INTERNAL");
    expect(text).not.toContain("password");
    expect(text).not.toContain("app.ts");
    expect(text).not.toContain(target.config.jwt.secretKey);

    const logged = target.logs.entries.find((entry) => entry.msg === "unhandled error") as {
      err: { stack: string; message: string };
      requestId: string;
    };
    expect(logged.requestId).toBe(body.requestId as string);
    expect(logged.err.stack).toContain("errors.test.ts");
    // The secret inside the exception's message is scrubbed from the log line too.
    expect(target.logs.text).not.toContain(target.config.jwt.secretKey);
    expect(logged.err.message).toContain("[REDACTED]");
  });
});

test("every error code has a status and the status switch is exhaustive", () => {
  for (const code of ERROR_CODES) {
    const status = statusForCode(code);
    expect(status).toBeGreaterThanOrEqual(400);
    expect(status).toBeLessThan(600);
  }
  expect(statusForCode("RATE_LIMITED")).toBe(429);
  expect(statusForCode("IP_BLOCKED")).toBe(403);
  expect(statusForCode("PAYLOAD_TOO_LARGE")).toBe(413);
});

test("a value outside a union is told the rule in words: the values allowed, or a whole number (probe 27c F5)", async () => {
  current = buildTestApp();
  const session = await signUp(current);
  const mode = await send(current, "/api/auth/login?mode=x", {
    body: { email: "a@example.com", password: "x" },
  });
  expect(mode.status).toBe(422);
  expect(((await mode.json()) as { errors: unknown[] }).errors).toEqual([
    { field: "query/mode", message: "Expected one of: 'token', 'cookie'" },
  ]);
  for (const limit of ["x", "1.5"]) {
    const response = await send(current, `/api/chat/conversations?limit=${limit}`, {
      headers: bearer(session.accessToken),
    });
    expect(response.status).toBe(422);
    expect(((await response.json()) as { errors: unknown[] }).errors).toEqual([
      { field: "query/limit", message: "Expected a whole number" },
    ]);
  }
});

test("an integer query parameter Elysia converts before refusing its range is named with the rule, not `property` (probe 27d F4)", async () => {
  current = buildTestApp();
  const session = await signUp(current);
  for (const limit of ["-1", "-0", "1e3", "99999999999999999999"]) {
    const response = await send(current, `/api/chat/conversations?limit=${limit}`, {
      headers: bearer(session.accessToken),
    });
    expect(response.status).toBe(422);
    expect(((await response.json()) as { errors: unknown[] }).errors).toEqual([
      { field: "query/limit", message: "Expected one whole number written in decimal digits" },
    ]);
  }
});

test("a value outside a UnionEnum is told the values allowed (probe 27d F4)", async () => {
  current = buildTestApp();
  const admin = await signUp(current, { role: "admin" });
  const response = await send(current, "/api/admin/api-keys", {
    headers: bearer(admin.accessToken),
    body: { name: "k", scopes: ["nope"], environment: "x" },
  });
  expect(response.status).toBe(422);
  expect(((await response.json()) as { errors: unknown[] }).errors).toEqual([
    { field: "body/scopes/0", message: "Expected one of: 'chat', 'payments', 'admin', 'metrics'" },
    { field: "body/environment", message: "Expected one of: 'live', 'test'" },
  ]);
});

describe("the access line's level", () => {
  test("a 500 is an error; a 503, with or without Retry-After, is a warning (probes 30e F8, 31b F3)", async () => {
    const target = appWithRoutes();
    const statuses = [];
    for (const path of ["/test/boom", "/test/unavailable", "/test/shedding", "/test/conflict"]) {
      statuses.push((await send(target, path)).status);
    }
    expect(statuses).toEqual([500, 503, 503, 409]);
    const levels = Object.fromEntries(
      target.logs.entries
        .filter((entry) => typeof entry.route === "string" && entry.status !== undefined)
        .map((entry) => [entry.route, entry.level]),
    );
    expect(levels).toMatchObject({
      "/test/boom": "error",
      "/test/unavailable": "warn",
      "/test/shedding": "warn",
      "/test/conflict": "warn",
    });
  });
});
