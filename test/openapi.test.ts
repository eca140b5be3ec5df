import { afterEach, expect, test } from "bun:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import { OptionalKind, TransformKind } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { Elysia, type TSchema } from "elysia";
import { ProblemSchema, problemResponses } from "../src/errors";
import type { Feature } from "../src/modules/feature";
import { DOCS_PATH } from "../src/plugins/openapi";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "./support/app";
import { bearer, createKey, signUp } from "./support/auth";
import { runToExit } from "./support/process";

/** The production profile's secrets, under the staging profile. */
const stagingSecrets = () => {
  const { APP_ENV: _production, ...secrets } = PRODUCTION_ENV;
  return secrets;
};

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const toOpenApiPath = (path: string) => path.replace(/:(\w+)\??/g, "{$1}");

/** A response schema as the document gives it: JSON, without the defaults of enums and literals. */
function asDocumented(schema: unknown): TSchema {
  return JSON.parse(JSON.stringify(schema), function (this: Record<string, unknown>, key, value) {
    return key === "default" && ("enum" in this || "const" in this) ? undefined : value;
  });
}

/** The parts of an operation these tests read. */
interface DocumentedOperation {
  responses: Record<string, { content?: Record<string, { schema: TSchema }> }>;
  requestBody?: { required: boolean; content: Record<string, { schema: TSchema }> };
  parameters?: { name: string; in: string; schema: Record<string, unknown> }[];
}

type OpenApiDocument = { paths: Record<string, Record<string, DocumentedOperation>> };

/** The app's `/openapi.json`, by path and method. */
async function documentOf(app: TestApp): Promise<OpenApiDocument> {
  return (await send(app, "/openapi.json")).json() as Promise<OpenApiDocument>;
}

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

test("each app's document, generated at its first request, describes that app's routes only", async () => {
  // The generator is loaded on first use: it must be pointed at the app that serves it, never at
  // the first app that asked for it in this process.
  const notes: Feature = {
    name: "notes",
    routeClasses: [{ routes: ["GET /api/notes"] }],
    routes: ({ auth }) => new Elysia().use(auth).get("/api/notes", () => [], { public: true }),
  };
  const plain = buildTestApp();
  const withNotes = buildTestApp({ extraFeatures: [notes] });
  try {
    const paths = async (target: TestApp) =>
      Object.keys(
        ((await (await send(target, "/openapi.json")).json()) as { paths: object }).paths,
      );
    expect(await paths(plain)).not.toContain("/api/notes");
    expect(await paths(withNotes)).toContain("/api/notes");
    expect(await paths(plain)).not.toContain("/api/notes");
  } finally {
    plain.close();
    withNotes.close();
  }
});

test("the document is the same whatever the process served before it", async () => {
  // Elysia compiles a route's validators at its first request, and that writes into the schema
  // objects the generator reads: the document must not depend on it.
  const cold = buildTestApp();
  const served = buildTestApp();
  const compiled = buildTestApp();
  try {
    const document = async (target: TestApp) => {
      const response = await send(target, "/openapi.json");
      expect(response.status).toBe(200);
      return response.text();
    };
    const first = await document(cold);

    expect((await send(served, "/health")).status).toBe(200);
    expect((await send(served, "/ready")).status).toBe(200);
    const login = await send(served, "/api/auth/login", {
      body: { email: "nobody@example.test", password: "not-the-password-1!" },
    });
    expect(login.status).toBe(401);
    expect((await send(served, "/api/auth/register", { body: { email: "x" } })).status).toBe(422);
    expect((await send(served, "/api/admin/audit")).status).toBe(401);
    expect(await document(served)).toBe(first);

    // A process that has served every route once: its schemas hold all Elysia will write.
    for (const route of compiled.app.routes) route.compile();
    expect(await document(compiled)).toBe(first);
  } finally {
    cold.close();
    served.close();
    compiled.close();
  }
});

test("/docs renders outside production and is absent in production", async () => {
  current = buildTestApp();
  const docs = await send(current, "/docs");
  expect(docs.status).toBe(200);
  expect(docs.headers.get("content-type")).toContain("text/html");
  // Served at /docs/ too, the page names the document by its absolute path: relative, it was
  // /docs/openapi.json there, a 404, and the page showed no API (probe 75c N1).
  for (const path of ["/docs", "/docs/"]) {
    const page = await (await send(current, path)).text();
    expect(page.match(/"url":"[^"]*"/g)).toEqual(['"url":"/openapi.json"']);
  }
  current.close();

  current = buildTestApp({
    env: PRODUCTION_ENV,
  });
  expect((await send(current, "/docs")).status).toBe(404);
});

test("in production /openapi.json is for admins only, unless OPENAPI_PUBLIC=true", async () => {
  current = buildTestApp({ env: PRODUCTION_ENV });
  const anonymous = await send(current, "/openapi.json");
  expect(anonymous.status).toBe(401);
  const user = await signUp(current);
  expect((await send(current, "/openapi.json", { headers: bearer(user.accessToken) })).status).toBe(
    403,
  );
  const admin = await signUp(current, { role: "admin" });
  const served = await send(current, "/openapi.json", { headers: bearer(admin.accessToken) });
  expect(served.status).toBe(200);
  const document = (await served.json()) as { paths: Record<string, unknown> };
  expect(Object.keys(document.paths)).toContain("/api/auth/register");
  current.close();

  current = buildTestApp({ env: { ...PRODUCTION_ENV, OPENAPI_PUBLIC: "true" } });
  expect((await send(current, "/openapi.json")).status).toBe(200);
  current.close();

  current = buildTestApp({ env: { APP_ENV: "staging", ...stagingSecrets() } });
  expect((await send(current, "/openapi.json")).status).toBe(200);
});

test("the document passes redocly lint (recommended rules, warnings as errors) with zero problems", async () => {
  const result = await runToExit(["bun", "run", "scripts/openapi-lint.ts"], {});
  expect(`${result.stdout}${result.stderr}`).toContain("Your API description is valid");
  expect(result.code).toBe(0);
}, 30_000);

test("every operation documents its errors as problem+json, and what is sent matches the schema", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  const text = JSON.stringify(document);
  expect(text).not.toContain('"nullable"');
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      const statuses = Object.keys(operation.responses);
      expect({ at: `${method} ${path}`, statuses }).toEqual({
        at: `${method} ${path}`,
        statuses: expect.arrayContaining(["400", "403", "429", "500"]),
      });
      const problem = operation.responses["400"]!.content!;
      expect(Object.keys(problem)).toEqual(["application/problem+json"]);
    }
  }
  // The documented schemas are errors.ts's, and what the server sends for them passes them.
  const [schema401, schema422] = [problemResponses(401)[401], problemResponses(422)[422]];
  const me = document.paths["/api/auth/me"]!.get!.responses;
  expect(me["401"]!.content!["application/problem+json"]!.schema).toEqual(asDocumented(schema401));
  const register = document.paths["/api/auth/register"]!.post!.responses;
  expect(register["422"]!.content!["application/problem+json"]!.schema).toEqual(
    asDocumented(schema422),
  );

  const unauthenticated = await send(current, "/api/auth/me");
  expect(unauthenticated.status).toBe(401);
  expect(unauthenticated.headers.get("content-type")).toStartWith("application/problem+json");
  expect(Value.Check(schema401, await unauthenticated.json())).toBe(true);
  const invalid = await send(current, "/api/auth/register", { body: { email: 1 } });
  expect(invalid.status).toBe(422);
  const body = await invalid.json();
  expect(Value.Check(schema422, body)).toBe(true);
  expect(Value.Check(ProblemSchema, body)).toBe(true);
  // A code that a status never carries does not pass that status's schema.
  expect(Value.Check(schema401, body)).toBe(false);
});

test("every route that takes a body documents it as application/json with the route's schema", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  const declared = current.app.routes.filter((route) => route.hooks.body);
  expect(declared.map((route) => `${route.method} ${route.path}`)).toEqual(
    expect.arrayContaining([
      "POST /api/auth/register",
      "POST /api/auth/login",
      "POST /api/chat",
      "POST /api/admin/payments/:id/refund",
    ]),
  );
  const fields = (schema: TSchema) => ({
    required: [...((schema.required as string[] | undefined) ?? [])].sort(),
    properties: Object.keys(schema.properties ?? {}).sort(),
  });
  for (const route of declared) {
    const at = `${route.method} ${route.path}`;
    const requestBody =
      document.paths[toOpenApiPath(route.path)]?.[route.method.toLowerCase()]?.requestBody;
    // The request guard refuses every other media type with 415: JSON is the only one listed.
    expect({ at, types: Object.keys(requestBody?.content ?? {}) }).toEqual({
      at,
      types: ["application/json"],
    });
    const schema = requestBody!.content["application/json"]!.schema;
    expect({ at, ...fields(schema) }).toEqual({ at, ...fields(route.hooks.body as TSchema) });
    // As plugins/strict-body enforces it: a property the schema does not name is refused.
    expect({ at, closed: schema.additionalProperties }).toEqual({ at, closed: false });
    // `t.Optional(…)` bodies (refresh, rotate, refund) may be left out.
    const optional = OptionalKind in (route.hooks.body as TSchema);
    expect({ at, required: requestBody!.required }).toEqual({ at, required: !optional });
  }
  expect(declared.length).toBe(9);

  // What the document says is what the server does: a number sent as a string is not one the
  // schema admits (no numeric-string alternative), and the server refuses it.
  const paths = document.paths as unknown as Record<
    string,
    Record<string, { requestBody: { content: Record<string, { schema: TSchema }> } }>
  >;
  const rotate =
    paths["/api/admin/api-keys/{id}/rotate"]!.post!.requestBody.content["application/json"]!.schema;
  expect(rotate.properties.graceMinutes).toMatchObject({ type: "integer" });
  expect(rotate.properties.graceMinutes.anyOf).toBeUndefined();
  const admin = await signUp(current, { role: "admin" });
  const { record } = createKey(current, ["payments"], admin.userId);
  const asString = await send(current, `/api/admin/api-keys/${record.id}/rotate`, {
    headers: bearer(admin.accessToken),
    body: { graceMinutes: "5" },
  });
  expect(asString.status).toBe(422);
  // Documented as optional, and so it is: a rotation with no body at all is done.
  const bare = await send(current, `/api/admin/api-keys/${record.id}/rotate`, {
    method: "POST",
    headers: bearer(admin.accessToken),
  });
  expect(bare.status).toBe(201);
  const credentials = { email: "nobody@example.test", password: "not-the-password-1!" };
  const extra = await send(current, "/api/auth/login", { body: { ...credentials, admin: true } });
  expect(extra.status).toBe(422);
});

test("an integer of a body or an answer is an integer, documented so and checked without a transform", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  // What a client reads: an answer's integer is never "a string of digits or an integer".
  const numericStringIn: string[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      const schemas = [
        ...Object.values(operation.responses).flatMap((r) => Object.values(r.content ?? {})),
        ...Object.values(operation.requestBody?.content ?? {}),
      ];
      for (const { schema } of schemas) {
        if (JSON.stringify(schema).includes('"format":"integer"'))
          numericStringIn.push(`${method.toUpperCase()} ${path}`);
      }
    }
  }
  expect(numericStringIn).toEqual([]);
  // What the server runs: a transform in a body or answer schema (Elysia's `t.Integer`) is a walk
  // of the whole schema on every request that has one (src/plugins/openapi/json-integer.ts).
  const transformsIn = (node: unknown, seen = new Set<unknown>()): boolean => {
    if (node === null || typeof node !== "object" || seen.has(node)) return false;
    seen.add(node);
    if (TransformKind in node) return true;
    return Object.values(node).some((child) => transformsIn(child, seen));
  };
  const withTransform = current.app.routes
    .filter((route) => transformsIn(route.hooks.body) || transformsIn(route.hooks.response))
    .map((route) => `${route.method} ${route.path}`);
  expect(withTransform).toEqual([]);
  // The query's integers stay text turned into numbers, as a query string must be.
  expect(
    transformsIn(current.app.routes.find((r) => r.path === "/api/payments")?.hooks.query),
  ).toBe(true);
});

test("an integer query parameter is documented as the integer the route takes, with no default it lacks", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  const limits: Record<string, unknown> = {};
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      for (const parameter of operation.parameters ?? []) {
        // No parameter has a default of its own: an absent one is the route's choice.
        expect({ path, name: parameter.name, default: parameter.schema.default }).toEqual({
          path,
          name: parameter.name,
          default: undefined,
        });
        expect(JSON.stringify(parameter.schema)).not.toContain('"format":"integer"');
        if (parameter.name === "limit")
          limits[`${method.toUpperCase()} ${path}`] = parameter.schema;
      }
    }
  }
  expect(limits["GET /api/admin/audit"]).toEqual({ type: "integer", minimum: 1, maximum: 500 });
  expect(limits["GET /api/admin/usage"]).toMatchObject({
    type: "integer",
    minimum: 1,
    maximum: 500,
  });
  expect(limits["GET /api/payments"]).toEqual({ type: "integer", minimum: 1, maximum: 100 });
});

test("no answer's schema has a default: an enum's or a literal's first value is not what an answer holds unless said (probe 28a F6)", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  const withDefault: string[] = [];
  const walk = (node: unknown, at: string) => {
    if (!node || typeof node !== "object") return;
    if (!Array.isArray(node) && "default" in node) withDefault.push(at);
    for (const [key, value] of Object.entries(node)) walk(value, `${at}/${key}`);
  };
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      walk(operation.responses, `${method} ${path}`);
    }
  }
  expect(withDefault).toEqual([]);
  // The messages' role among them, which read "user unless said".
  const page = document.paths["/api/chat/conversations/{id}"]!.get!.responses["200"]!;
  expect(JSON.stringify(page)).toContain('"enum":["user","assistant"]');
});

test("the request guard's refusals are documented: 414 on every operation, 408, 413 and 415 on every method whose body it reads (probes 27c F3, 27d F2, 30a F4)", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  let withBody = 0;
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      const statuses = Object.keys(operation.responses);
      const expected = ["get", "head", "options"].includes(method)
        ? ["414"]
        : ["408", "413", "414", "415"];
      if (expected.length === 4) withBody++;
      expect({ at: `${method} ${path}`, statuses }).toEqual({
        at: `${method} ${path}`,
        statuses: expect.arrayContaining(expected),
      });
    }
  }
  expect(withBody).toBeGreaterThan(5);
  const documented =
    document.paths["/api/auth/register"]!.post!.responses["415"]!.content![
      "application/problem+json"
    ]!.schema;
  const schema415 = problemResponses(415)[415];
  expect(documented).toEqual(asDocumented(schema415));
  const refused = await send(current, "/api/auth/register", {
    body: "email=a",
    headers: { "content-type": "application/x-www-form-urlencoded" },
  });
  expect(refused.status).toBe(415);
  expect(Value.Check(schema415, await refused.json())).toBe(true);
});

test("501 NOT_CONFIGURED is documented on exactly the routes of a feature that may be left unconfigured, and what they send matches it (probe 43c F1)", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  const with501: string[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (operation.responses["501"] !== undefined) with501.push(`${method} ${path}`);
    }
  }
  expect(with501.sort()).toEqual([
    "get /api/payments",
    "get /api/payments/{id}",
    "post /api/admin/payments/{id}/refund",
    "post /api/payments/intents",
    "post /webhooks/stripe",
    "post /webhooks/whatsapp",
  ]);
  const documented =
    document.paths["/webhooks/stripe"]!.post!.responses["501"]!.content![
      "application/problem+json"
    ]!.schema;
  const schema501 = problemResponses(501)[501];
  expect(documented).toEqual(asDocumented(schema501));
  expect(JSON.stringify(documented)).toContain('"enum":["NOT_CONFIGURED"]');
  const answered = await send(current, "/webhooks/stripe", { body: {} });
  expect(answered.status).toBe(501);
  expect(Value.Check(schema501, await answered.json())).toBe(true);
});

test("422 is documented on every operation whose body the request guard reads, but the signed webhooks', and answered there for a body nested too deep (probe 89e F4)", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  const bodyWithout422: string[] = [];
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (!["post", "put", "patch", "delete"].includes(method)) continue;
      if (operation.responses["422"] === undefined) bodyWithout422.push(`${method} ${path}`);
    }
  }
  expect(bodyWithout422.sort()).toEqual(["post /webhooks/stripe", "post /webhooks/whatsapp"]);
  const deep = `${"[".repeat(40)}${"]".repeat(40)}`;
  const logout = await send(current, "/api/auth/logout", {
    body: deep,
    headers: { "content-type": "application/json" },
  });
  expect(logout.status).toBe(422);
  expect(document.paths["/api/auth/logout"]!.post!.responses["422"]).toBeDefined();
});

test("GET /metrics documents the credentials it takes, and each works with METRICS_TOKEN set (probe 35a F2)", async () => {
  const token = "mtok_openapi_test_0123456789abcdef0123456789";
  current = buildTestApp({ env: { METRICS_TOKEN: token } });
  const document = (await documentOf(current)) as unknown as {
    paths: Record<string, Record<string, { security: Record<string, string[]>[] }>>;
  };
  // As this configuration checks it: with the token, never anonymous (probe 86d F5: `{}` was
  // listed, anonymous allowed, where it is 401).
  expect(document.paths["/metrics"]!.get!.security).toEqual([{ bearerAuth: [] }, { apiKey: [] }]);
  expect((await send(current, "/metrics")).status).toBe(401);
  // Without it, open, and documented so.
  current.close();
  current = buildTestApp();
  const open = (await documentOf(current)) as unknown as typeof document;
  expect(open.paths["/metrics"]!.get!.security).toEqual([]);
  expect((await send(current, "/metrics")).status).toBe(200);
  current.close();
  current = buildTestApp({ env: { METRICS_TOKEN: token } });
  const bearerScrape = await send(current, "/metrics", {
    headers: { authorization: `Bearer ${token}` },
  });
  expect(bearerScrape.status).toBe(200);
  const { key } = createKey(current, ["metrics"]);
  expect((await send(current, "/metrics", { headers: { "x-api-key": key } })).status).toBe(200);
  // Served on a METRICS_PORT of its own: not on this port, so not in this port's document (probe
  // 87a F7: listed as open, answered 404).
  current.close();
  current = buildTestApp({ env: { METRICS_PORT: "44999" } });
  const elsewhere = (await documentOf(current)) as unknown as typeof document;
  expect(elsewhere.paths["/metrics"]).toBeUndefined();
  expect((await send(current, "/metrics")).status).toBe(404);
});

test("what a route reads itself is in the document: the chat stream's media type and events, the webhooks' signature headers and Meta's query (probe 81f F1)", async () => {
  current = buildTestApp();
  const document = await documentOf(current);
  const chat = document.paths["/api/chat"]!.post!;
  const answered = chat.responses["200"]!.content!;
  expect(Object.keys(answered).sort()).toEqual(["application/json", "text/event-stream"]);
  expect(JSON.stringify(answered["text/event-stream"]!.schema)).toContain("event: done");
  // And the stream is what the route serves with that Accept.
  const user = await signUp(current);
  const streamed = await send(current, "/api/chat", {
    body: { message: "How do I connect OpenAI?" },
    headers: { ...bearer(user.accessToken), accept: "text/event-stream" },
  });
  expect(streamed.status).toBe(200);
  expect(streamed.headers.get("content-type")).toStartWith("text/event-stream");
  await streamed.text();

  const parameters = (path: string, method: string) =>
    (document.paths[path]![method]!.parameters ?? []).map((p) => `${p.in} ${p.name}`);
  expect(parameters("/webhooks/whatsapp", "get")).toEqual([
    "query hub.mode",
    "query hub.verify_token",
    "query hub.challenge",
  ]);
  expect(parameters("/webhooks/whatsapp", "post")).toEqual(["header X-Hub-Signature-256"]);
  expect(parameters("/webhooks/stripe", "post")).toEqual(["header Stripe-Signature"]);
  // The marks the routes carry for it are not left in the document.
  const text = JSON.stringify(document);
  expect(text).not.toContain("x-palisade-parameters");
  expect(text).not.toContain("x-palisade-event-stream");
});

test("the audit query's parameters are documented as the route takes them (probe 91b F3, F4)", async () => {
  current = buildTestApp();
  const parameters = (await documentOf(current)).paths["/api/admin/audit"]!.get!.parameters!;
  const schemaOf = (name: string) =>
    parameters.find((parameter) => parameter.name === name)!.schema;
  expect(schemaOf("cursor")).toMatchObject({
    minimum: Number.MIN_SAFE_INTEGER,
    maximum: Number.MAX_SAFE_INTEGER,
  });
  expect(String(schemaOf("since").description)).toContain("upper-case T and Z");
  expect(String(schemaOf("until").description)).toContain("no leap second");
  expect(String(schemaOf("ip").description)).toContain("IPv4 or IPv6 address");
});
