/**
 * Every JSON body is checked as sent against its route's schema (plugins/strict-body): the
 * schema's type, JSON numbers only, no unknown field, no `__proto__`/`constructor`/`prototype`
 * key — on every route that takes a body, not only the ones the payments probe found.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { apiKeys } from "../../src/db/schema";
import {
  IMPRECISE_NUMBER,
  MAX_BODY_VALUES,
  scanJsonText,
} from "../../src/plugins/request-guard/body";
import { send } from "../support/app";
import { bearer, createKey, type Session, STRONG_PASSWORD, signUp } from "../support/auth";
import {
  buildPaymentsApp,
  createIntent,
  deliver,
  type PaymentsApp,
  stripeEvent,
  succeed,
} from "../support/payments";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

interface RegisteredRoute {
  method: string;
  path: string;
  hooks?: { body?: unknown };
}

async function setUp() {
  current = buildPaymentsApp();
  const admin = await signUp(current, { role: "admin" });
  const alice = await signUp(current);
  const created = await createIntent(current, bearer(alice.accessToken), {
    amount: 5000,
    currency: "usd",
  });
  const paymentId = ((await created.json()) as { id: string }).id;
  await succeed(current, paymentId);
  return { target: current, admin, alice, paymentId };
}

async function problem(response: Response) {
  const body = (await response.json()) as Record<string, unknown>;
  return { ...body, status: response.status } as Record<string, unknown> & { status: number };
}

/** A refusal's status, code and first message, beside the body that was sent. */
async function refusalOf(raw: string, response: Response) {
  const body = (await response.json()) as { code: string; errors?: { message: string }[] };
  return [raw, response.status, body.code, body.errors?.[0]?.message];
}

const fieldsOf = (body: Record<string, unknown>) =>
  (body.errors as { field: string }[] | undefined)?.map((e) => e.field) ?? [];

describe("a body that is not the schema's type", () => {
  test("every route that takes a JSON body refuses arrays, scalars and null with 422", async () => {
    const { target, admin, paymentId } = await setUp();
    const { record } = createKey(target, ["payments"], admin.userId);
    const withBody = (target.app.routes as RegisteredRoute[]).filter(
      (route) => route.hooks?.body !== undefined && route.method !== "WS",
    );
    // Payments, refunds, chat, sign-up, login, refresh, keys, rotation, blocks at least.
    expect(withBody.length).toBeGreaterThanOrEqual(9);
    for (const route of withBody) {
      const path = route.path
        .replace("/api/admin/payments/:id", `/api/admin/payments/${paymentId}`)
        .replace("/api-keys/:id", `/api-keys/${record.id}`)
        .replace(/:[^/]+/g, "12345");
      for (const raw of ['[{"amount":100}]', "100", '"100"', "null", "[]", "true"]) {
        const response = await send(target, path, {
          method: route.method,
          body: raw,
          headers: { ...bearer(admin.accessToken), "idempotency-key": `k-${Math.random()}` },
        });
        const body = (await response.json()) as { errors?: { field: string }[] };
        // The body itself is named, not every field Elysia found missing once it read the body
        // as `{}` (probe 90e F1).
        expect({
          route: `${route.method} ${route.path}`,
          raw,
          status: response.status,
          fields: body.errors?.map((error) => error.field),
        }).toEqual({
          route: `${route.method} ${route.path}`,
          raw,
          status: 422,
          fields: ["body"],
        });
      }
    }
    // Nothing was refunded, nothing rotated, no second intent.
    expect(target.stripe.calls.filter((c) => c.path === "/v1/refunds")).toEqual([]);
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
    expect(
      target.db
        .select()
        .from(apiKeys)
        .all()
        .filter((k) => k.replacedBy !== null),
    ).toEqual([]);
  });
});

describe("numbers must be JSON numbers", () => {
  const numericStrings = ["0x3e8", " 1000 ", "1e3", "1000"];

  test("payments amount", async () => {
    const { target, alice } = await setUp();
    for (const amount of numericStrings) {
      const body = await problem(
        await createIntent(target, bearer(alice.accessToken), { amount, currency: "usd" }),
      );
      expect(body.status).toBe(422);
      expect(body.code).toBe("VALIDATION_FAILED");
      expect(fieldsOf(body)).toEqual(["body/amount"]);
    }
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  });

  test("refund amount", async () => {
    const { target, admin, paymentId } = await setUp();
    for (const amount of ["100", "0x64", "1e2"]) {
      const body = await problem(
        await send(target, `/api/admin/payments/${paymentId}/refund`, {
          body: { amount },
          headers: bearer(admin.accessToken),
        }),
      );
      expect(body.status).toBe(422);
      expect(fieldsOf(body)).toEqual(["body/amount"]);
    }
    expect(target.stripe.calls.filter((c) => c.path === "/v1/refunds")).toEqual([]);
  });

  test("admin key expiry and rotation grace", async () => {
    const { target, admin } = await setUp();
    const created = await problem(
      await send(target, "/api/admin/api-keys", {
        body: { name: "ci", scopes: ["chat"], expiresInDays: "30" },
        headers: bearer(admin.accessToken),
      }),
    );
    expect(created.status).toBe(422);
    expect(fieldsOf(created)).toEqual(["body/expiresInDays"]);
    const { record } = createKey(target, ["chat"], admin.userId);
    const rotated = await problem(
      await send(target, `/api/admin/api-keys/${record.id}/rotate`, {
        body: { graceMinutes: "5" },
        headers: bearer(admin.accessToken),
      }),
    );
    expect(rotated.status).toBe(422);
    expect(fieldsOf(rotated)).toEqual(["body/graceMinutes"]);
    // The same bodies with real numbers are taken.
    const ok = await send(target, `/api/admin/api-keys/${record.id}/rotate`, {
      body: { graceMinutes: 5 },
      headers: bearer(admin.accessToken),
    });
    expect(ok.status).toBe(201);
  });

  test("query strings still coerce (they are text by nature)", async () => {
    const { target, alice } = await setUp();
    const response = await send(target, "/api/payments?limit=10", {
      headers: bearer(alice.accessToken),
    });
    expect(response.status).toBe(200);
  });
});

describe("unknown fields and reserved keys", () => {
  test("an unknown field is refused on routes whose fields are all optional", async () => {
    const { target, admin, paymentId } = await setUp();
    const refund = await problem(
      await send(target, `/api/admin/payments/${paymentId}/refund`, {
        body: { amout: 100 },
        headers: bearer(admin.accessToken),
      }),
    );
    expect(refund.status).toBe(422);
    expect(fieldsOf(refund)).toEqual(["body/amout"]);
    const signup = await problem(
      await send(target, "/api/auth/register", {
        body: { email: "new@example.org", password: STRONG_PASSWORD, role: "admin" },
      }),
    );
    expect(signup.status).toBe(422);
    expect(fieldsOf(signup)).toEqual(["body/role"]);
    expect(target.stripe.calls.filter((c) => c.path === "/v1/refunds")).toEqual([]);
  });

  test('"metadata" must be an object of strings, never split per character', async () => {
    const { target, alice } = await setUp();
    for (const metadata of ["order-42", ["a"], { a: 1 }, { a: { b: "c" } }]) {
      const body = await problem(
        await createIntent(target, bearer(alice.accessToken), {
          amount: 1000,
          currency: "usd",
          metadata,
        }),
      );
      expect(body.status).toBe(422);
      expect(fieldsOf(body)[0]).toStartWith("body/metadata");
    }
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  });

  test("__proto__, constructor and prototype keys are refused at any depth, whatever the value", async () => {
    const { target, alice } = await setUp();
    for (const key of ["__proto__", "constructor", "prototype"]) {
      for (const value of ['{"nested":"object"}', '"a string"']) {
        const raw = `{"amount":1000,"currency":"usd","metadata":{"${key}":${value},"a":"b"}}`;
        const body = await problem(await createIntent(target, bearer(alice.accessToken), raw));
        expect(body.status).toBe(422);
        expect(fieldsOf(body)[0]).toStartWith("body/metadata");
      }
    }
    const top = await problem(
      await createIntent(
        target,
        bearer(alice.accessToken),
        '{"amount":1000,"currency":"usd","__proto__":{"amount":1}}',
      ),
    );
    expect(top.status).toBe(422);
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  });

  test("a key holding `/` is one name of the error's path, not several plain words: never echoed (probe 84f F1)", async () => {
    const { target, alice } = await setUp();
    const words = Array.from({ length: 60 }, (_, i) => `word${i}-${"w".repeat(30)}`).join("/");
    for (const key of ["Session-expired/log-in-again-at/evil-example-com/now", words]) {
      const raw = JSON.stringify({
        amount: 1000,
        currency: "usd",
        metadata: { [key]: { a: 1 } },
      }).replace('"a":1', '"__proto__":1');
      const body = await problem(await createIntent(target, bearer(alice.accessToken), raw));
      expect(body.status).toBe(422);
      expect(fieldsOf(body)).toEqual(["body/metadata"]);
      expect(JSON.stringify(body)).not.toContain("evil");
      expect(JSON.stringify(body)).not.toContain("word1-");
    }
  });

  test("an anonymous caller still gets 401 before any body check", async () => {
    const { target } = await setUp();
    const response = await createIntent(target, {}, { amount: "1000", currency: "usd" });
    expect(response.status).toBe(401);
  });
});

async function sessionOf(target: PaymentsApp): Promise<Session> {
  return signUp(target);
}

describe("media types are matched without regard to case or parameters", () => {
  const spellings = [
    "Application/JSON",
    "APPLICATION/JSON; charset=UTF-8",
    'application/json ; charset="utf-8"',
    "application/Json;charset=utf-8",
  ];

  test("a partial refund is the amount asked in every spelling", async () => {
    const { target, admin, alice } = await setUp();
    for (const contentType of spellings) {
      const created = await createIntent(
        target,
        { ...bearer(alice.accessToken), "content-type": contentType },
        '{"amount":5000,"currency":"usd"}',
      );
      expect(created.status).toBe(201);
      const id = ((await created.json()) as { id: string }).id;
      await succeed(target, id);
      const response = await send(target, `/api/admin/payments/${id}/refund`, {
        body: '{"amount":100}',
        headers: { ...bearer(admin.accessToken), "content-type": contentType },
      });
      expect(response.status).toBe(200);
      const { payment } = (await response.json()) as { payment: { amountRefunded: number } };
      expect(payment.amountRefunded).toBe(100);
    }
    expect(
      target.stripe.calls.filter((c) => c.path === "/v1/refunds").map((c) => c.params.amount),
    ).toEqual(spellings.map(() => "100"));
  });

  test("sign-up, login and chat read the body in every spelling", async () => {
    const { target } = await setUp();
    for (const [i, contentType] of spellings.entries()) {
      const email = `spelling${i}@example.org`;
      const registered = await send(target, "/api/auth/register", {
        body: JSON.stringify({ email, password: STRONG_PASSWORD }),
        headers: { "content-type": contentType },
      });
      expect(registered.status).toBe(201);
      const login = await send(target, "/api/auth/login", {
        body: JSON.stringify({ email, password: STRONG_PASSWORD }),
        headers: { "content-type": contentType },
        peer: `10.9.0.${i + 1}`,
      });
      expect(login.status).toBe(200);
    }
    const user = await sessionOf(target);
    for (const contentType of spellings) {
      const response = await send(target, "/api/chat", {
        body: '{"message":"What is Palisade?"}',
        headers: { ...bearer(user.accessToken), "content-type": contentType },
      });
      expect(response.status).toBe(200);
    }
  });
});

describe("the strict schema", () => {
  test("turns Elysia's numeric transforms into JSON numbers, closes objects, keeps defaults optional", async () => {
    const { t } = await import("elysia");
    const { TypeCompiler } = await import("@sinclair/typebox/compiler");
    const { strictSchemaOf } = await import("../../src/plugins/strict-body");
    const schema = t.Object({
      n: t.Integer({ minimum: 1 }),
      x: t.Number(),
      d: t.String({ default: "z" }),
      open: t.Object({}, { additionalProperties: true }),
      list: t.Array(t.Object({ k: t.Numeric() })),
    });
    const check = TypeCompiler.Compile(strictSchemaOf(schema as never));
    expect(check.Check({ n: 2, x: 1.5, open: { any: 1 }, list: [{ k: 3 }] })).toBe(true);
    expect(check.Check({ n: "2", x: 1.5, open: {}, list: [] })).toBe(false);
    expect(check.Check({ n: 2, x: 1.5, open: {}, list: [{ k: "3" }] })).toBe(false);
    expect(check.Check({ n: 2, x: 1.5, open: {}, list: [{ k: 3, extra: 1 }] })).toBe(false);
    expect(check.Check({ n: 0, x: 1.5, open: {}, list: [] })).toBe(false);
  });
});

describe("bodies nested too deep", () => {
  test("are 422 before anything walks them, arrays and objects, anonymous or not, never a 500", async () => {
    const { alice } = await setUp();
    const deepArray = (n: number) => `${"[".repeat(n)}${"]".repeat(n)}`;
    const deepObject = (n: number) => `${'{"a":'.repeat(n)}1${"}".repeat(n)}`;
    const cases = [
      {
        path: "/api/auth/register",
        auth: {},
        body: `{"email":"q@example.com","password":${deepArray(5000)}}`,
      },
      {
        path: "/api/auth/login",
        auth: {},
        body: `{"email":"q@example.com","password":${deepObject(2000)}}`,
      },
      {
        path: "/api/payments/intents",
        auth: { ...bearer(alice.accessToken), "idempotency-key": "deep-1" },
        body: `{"amount":1000,"currency":"usd","metadata":${deepArray(20000)}}`,
      },
    ];
    for (const { path, auth, body } of cases) {
      const response = await send(current!, path, {
        method: "POST",
        headers: { "content-type": "application/json", ...auth },
        body,
      });
      expect(response.status).toBe(422);
      expect(((await response.json()) as { code: string }).code).toBe("VALIDATION_FAILED");
    }
    expect(current!.logs.text).not.toContain("Maximum call stack");
  });
});

describe("bodies of too many values", () => {
  test("are 422 before they are parsed, on every route with a schema, whatever the values; the signed webhooks take theirs (probe 89b F1)", async () => {
    const { target, alice } = await setUp();
    const many = (n: number, value: string) => Array.from({ length: n }, () => value).join(",");
    // The probe's body: 900 arrays of 30 levels each (27,000 values in 55 KB, under the depth).
    const nested = `${"[".repeat(30)}${"]".repeat(30)}`;
    const cases = [
      { path: "/api/auth/register", auth: {}, body: `{"email":[${many(900, nested)}]}` },
      { path: "/api/auth/login", auth: {}, body: `{"email":[${many(MAX_BODY_VALUES, "1")}]}` },
      {
        path: "/api/payments/intents",
        auth: { ...bearer(alice.accessToken), "idempotency-key": "many-1" },
        body: `{"amount":1000,"currency":"usd","metadata":{${Array.from(
          { length: MAX_BODY_VALUES },
          (_, i) => `"k${i}":"v"`,
        ).join(",")}}}`,
      },
    ];
    for (const { path, auth, body } of cases) {
      const response = await send(target, path, {
        method: "POST",
        headers: { "content-type": "application/json", ...auth },
        body,
        peer: "10.41.0.1",
      });
      expect(await refusalOf(body.slice(0, 40), response)).toEqual([
        body.slice(0, 40),
        422,
        "VALIDATION_FAILED",
        `Holds more than ${MAX_BODY_VALUES} values`,
      ]);
    }
    // At the limit, a body is judged on its merits as before (an email is no array of numbers).
    const atLimit = `{"email":[${many(MAX_BODY_VALUES - 2, "1")}]}`;
    const judged = await send(target, "/api/auth/login", { body: atLimit, peer: "10.41.0.2" });
    expect(judged.status).toBe(422);
    expect(await judged.text()).not.toContain("values");
    // Commas in strings are not values: the longest chat message of commas is taken.
    expect(scanJsonText(`{"message":"${",".repeat(4000)}"}`, 32, MAX_BODY_VALUES)).toBe(1);
    // A signed webhook's event is its provider's, as large as it writes it.
    const event = stripeEvent("payment_intent.processing", {
      id: "pi_many_values",
      object: "payment_intent",
      metadata: Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`k${i}`, "v"])),
    });
    expect((await deliver(target, event)).status).toBe(200);
  });
});

describe("keys named like Object.prototype's members", () => {
  test("are 422 wherever they are, on every JSON body, before anything turns the body into text", async () => {
    const { target } = await setUp();
    const users = () => target.db.$client.query("SELECT COUNT(*) AS n FROM users").get();
    const before = users();
    const keys = [
      "toString",
      "valueOf",
      "hasOwnProperty",
      "isPrototypeOf",
      "toLocaleString",
      "__defineGetter__",
    ];
    for (const key of keys) {
      for (const raw of [
        `{"email":{"${key}":"x"},"password":"Correct-Horse-Battery-9x!"}`,
        `{"email":"a@example.test","password":"Correct-Horse-Battery-9x!","${key}":1}`,
        // An escaped spelling of the same key.
        `{"email":{"\\u00${key.charCodeAt(0).toString(16)}${key.slice(1)}":"x"},"password":"p"}`,
      ]) {
        const response = await send(target, "/api/auth/register", { body: raw, peer: "10.40.0.1" });
        const body = (await response.json()) as { code: string; errors?: { message: string }[] };
        expect([key, raw, response.status, body.code]).toEqual([
          key,
          raw,
          422,
          "VALIDATION_FAILED",
        ]);
        expect(body.errors?.[0]?.message).toStartWith("Reserved key");
      }
    }
    expect(users()).toEqual(before);
    // Read with the body, before authentication, as a malformed body is; never reaching Stripe.
    for (const [path, raw] of [
      ["/api/payments/intents", '{"amount":1000,"currency":{"toString":"x"}}'],
      ["/api/chat", '{"message":{"toString":"x"}}'],
      ["/api/auth/refresh", '{"refreshToken":{"toString":"x"}}'],
    ]) {
      const response = await send(target, path!, { body: raw, peer: "10.40.0.2" });
      expect([path, response.status]).toEqual([path, 422]);
    }
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  });
});

describe("a key repeated in one object", () => {
  test("is 422 on every JSON body with a schema, in any object, however it is spelt; nothing is done", async () => {
    const { target, alice } = await setUp();
    const users = () => target.db.$client.query("SELECT COUNT(*) AS n FROM users").get();
    const before = users();
    for (const raw of [
      // The last one wins in JSON.parse: a filter that read the first saw a string.
      '{"amount":"1000","amount":1000,"currency":"usd"}',
      '{"amount":1000,"currency":"usd","currency":"eur"}',
      // An escaped spelling of the same key.
      '{"amount":1000,"\\u0061mount":2000,"currency":"usd"}',
      '{"amount":1000,"currency":"usd","metadata":{"order":"1","order":"2"}}',
    ]) {
      const response = await createIntent(target, bearer(alice.accessToken), raw);
      expect(await refusalOf(raw, response)).toEqual([
        raw,
        422,
        "VALIDATION_FAILED",
        "A key is repeated within one object",
      ]);
    }
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
    const register = await send(target, "/api/auth/register", {
      body: `{"email":"twice@example.test","password":"${STRONG_PASSWORD}","email":"other@example.test"}`,
      peer: "10.41.0.1",
    });
    expect(register.status).toBe(422);
    expect(users()).toEqual(before);
    // Read with the body, before authentication, as a malformed body is.
    const anonymous = await createIntent(
      target,
      {},
      '{"amount":1000,"amount":1000,"currency":"usd"}',
    );
    expect(anonymous.status).toBe(422);
  });

  test("colons inside strings and the same key in different objects are no repeat", async () => {
    const { target, alice } = await setUp();
    const response = await createIntent(
      target,
      bearer(alice.accessToken),
      '{"amount":1000,"currency":"usd","description":"a:b \\":\\" c","metadata":{"amount":"x:y","note\\":":"z"}}',
    );
    expect(response.status).toBe(201);
    expect(target.stripe.created("/v1/payment_intents")).toBe(2);
  });
});

describe("a number written with more digits than JSON.parse keeps (probe 75c F3)", () => {
  const imprecise =
    "A number is written with more digits than it is read with, or is out of range (at most 15 significant digits, a double's shortest spelling, or its exact value)";

  test("is 422 on every JSON body with a schema, wherever it stands; nothing is done", async () => {
    const { target, alice, admin } = await setUp();
    for (const amount of [
      // Each read as a whole number of cents within bounds that the text is not.
      "1000.00000000000001",
      "999.99999999999999999",
      "9007199254740993",
      "1e400",
      "1e-400",
    ]) {
      const raw = `{"amount":${amount},"currency":"usd"}`;
      const response = await createIntent(target, bearer(alice.accessToken), raw);
      expect(await refusalOf(raw, response)).toEqual([raw, 422, "VALIDATION_FAILED", imprecise]);
    }
    const keys = () => target.db.$client.query("SELECT COUNT(*) AS n FROM api_keys").get();
    const before = keys();
    for (const days of ["3650.0000000000001", "0.99999999999999999999", "1.0000000000000000001"]) {
      const response = await send(target, "/api/admin/api-keys", {
        body: `{"name":"ci","scopes":["chat"],"expiresInDays":${days}}`,
        headers: bearer(admin.accessToken),
      });
      expect([days, response.status]).toEqual([days, 422]);
    }
    expect(keys()).toEqual(before);
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  });

  test("a number as encoders write it is taken: trailing zeros, an exponent, a double's shortest spelling", async () => {
    const { target, alice, admin } = await setUp();
    for (const amount of ["1000.0", "1.000000000000000000e3", "1000.00000000000000000"]) {
      const response = await createIntent(
        target,
        bearer(alice.accessToken),
        `{"amount":${amount},"currency":"usd"}`,
      );
      expect([amount, response.status]).toEqual([amount, 201]);
    }
    const key = await send(target, "/api/admin/api-keys", {
      body: '{"name":"ci","scopes":["chat"],"expiresInDays":3650.000000000000000}',
      headers: bearer(admin.accessToken),
    });
    expect(key.status).toBe(201);
    // 0.1 + 0.2 as JSON.stringify writes it: not a whole number, refused by the schema alone.
    const fraction = await send(target, "/api/admin/api-keys", {
      body: '{"name":"ci","scopes":["chat"],"expiresInDays":0.30000000000000004}',
      headers: bearer(admin.accessToken),
    });
    const body = (await fraction.json()) as { errors?: { field: string; message: string }[] };
    expect(fraction.status).toBe(422);
    expect(body.errors?.[0]?.field).toBe("body/expiresInDays");
  });

  test("a number's exact value, however long, is the number read (probe 75e F3)", async () => {
    const { target, alice, admin } = await setUp();
    // 2^60 and Java's spelling of 282879384806159008 are exactly doubles: the schema's maximum
    // judges them, not the number check.
    for (const amount of ["1152921504606846976", "2.82879384806159008E17"]) {
      const raw = `{"amount":${amount},"currency":"usd"}`;
      const response = await createIntent(target, bearer(alice.accessToken), raw);
      const body = (await response.json()) as { errors?: { field: string; message: string }[] };
      expect([amount, response.status, body.errors?.[0]?.field]).toEqual([
        amount,
        422,
        "body/amount",
      ]);
      expect(body.errors?.[0]?.message).not.toBe(imprecise);
    }
    // 0.1 as the double holds it, all 55 digits: a fraction, refused as one.
    const exact = await send(target, "/api/admin/api-keys", {
      body: '{"name":"ci","scopes":["chat"],"expiresInDays":0.1000000000000000055511151231257827021181583404541015625}',
      headers: bearer(admin.accessToken),
    });
    const body = (await exact.json()) as { errors?: { field: string; message: string }[] };
    expect([exact.status, body.errors?.[0]?.field]).toEqual([422, "body/expiresInDays"]);
    expect(body.errors?.[0]?.message).not.toBe(imprecise);
    // One digit more than the exact value is another number.
    const raw = '{"amount":1000.0000000000000000000000001,"currency":"usd"}';
    const response = await createIntent(target, bearer(alice.accessToken), raw);
    expect(await refusalOf(raw, response)).toEqual([raw, 422, "VALIDATION_FAILED", imprecise]);
  });

  test("a number of thousands of zeros is read in one pass (probe 75e F2: a 250 KiB body froze the service for a minute)", async () => {
    const { target, alice } = await setUp();
    const zeros = "0".repeat(60 * 1024);
    const raw = `{"amount":1000.${zeros}1,"currency":"usd"}`;
    const response = await createIntent(target, bearer(alice.accessToken), raw);
    expect(await refusalOf(raw, response)).toEqual([raw, 422, "VALIDATION_FAILED", imprecise]);
    // Each shape a megabyte long, as a body limit raised that far lets through: before the fix
    // the first took minutes.
    const long = "0".repeat(1024 * 1024);
    expect(scanJsonText(`{"a":0.1${long}1}`, 32)).toBe(IMPRECISE_NUMBER);
    expect(scanJsonText(`{"a":0.${long}1}`, 32)).toBe(IMPRECISE_NUMBER);
    expect(scanJsonText(`{"a":1${long}}`, 32)).toBe(IMPRECISE_NUMBER);
    expect(scanJsonText(`{"a":1${long}e-${long.length}}`, 32)).toBe(1);
    expect(scanJsonText(`{"a":1.${long}}`, 32)).toBe(1);
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  });
});
