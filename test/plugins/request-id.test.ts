import { afterEach, expect, test } from "bun:test";
import { acceptableRequestId } from "../../src/plugins/request-id";
import { buildTestApp, send, type TestApp } from "../support/app";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("every response carries a fresh X-Request-Id", async () => {
  current = buildTestApp();
  const first = await send(current, "/health");
  const second = await send(current, "/nope");
  const a = first.headers.get("x-request-id");
  const b = second.headers.get("x-request-id");
  expect(a).toMatch(/^[0-9a-f-]{36}$/);
  expect(b).toMatch(/^[0-9a-f-]{36}$/);
  expect(a).not.toBe(b);
});

test("a short safe incoming id is kept and logged", async () => {
  current = buildTestApp();
  const response = await send(current, "/health", { headers: { "x-request-id": "trace-abc.123" } });
  expect(response.headers.get("x-request-id")).toBe("trace-abc.123");
  const entry = current.logs.entries.find((e) => e.msg === "request");
  expect(entry?.requestId).toBe("trace-abc.123");
});

test("an incoming id shaped as Palisade makes them is replaced: another request's id cannot be reused (probe 70d F1)", async () => {
  current = buildTestApp();
  const made = (await send(current, "/health")).headers.get("x-request-id")!;
  for (const copied of [made, made.toUpperCase(), `x${made}`, `${made}.1`, Bun.randomUUIDv7()]) {
    const response = await send(current, "/nope", { headers: { "x-request-id": copied } });
    const id = response.headers.get("x-request-id")!;
    expect(id.toLowerCase()).not.toBe(copied.toLowerCase());
    expect(((await response.json()) as { requestId: string }).requestId).toBe(id);
  }
  const logged = current.logs.entries.filter((e) => e.msg === "request" && e.requestId === made);
  expect(logged).toHaveLength(1);
  // An id of another shape, a UUIDv4 as other services make them, is still kept.
  const v4 = crypto.randomUUID();
  const kept = await send(current, "/health", { headers: { "x-request-id": v4 } });
  expect(kept.headers.get("x-request-id")).toBe(v4);
});

test("an id made here in another spelling (no dashes, other separators, any case) is replaced too; a client's 32-digit trace id is kept (probe 88c F2)", async () => {
  current = buildTestApp();
  const made = (await send(current, "/health")).headers.get("x-request-id")!;
  const digits = made.replaceAll("-", "");
  for (const spelled of [
    digits,
    digits.toUpperCase(),
    made.replaceAll("-", "."),
    made.replaceAll("-", ":"),
    made.replaceAll("-", "_"),
    `${made.slice(0, 8)}_${made.slice(9)}`,
    `trace.${digits}.1`,
  ]) {
    const response = await send(current, "/nope", { headers: { "x-request-id": spelled } });
    expect({ spelled, kept: response.headers.get("x-request-id") === spelled }).toEqual({
      spelled,
      kept: false,
    });
  }
  // A W3C trace id that happens to carry UUIDv7's version and variant digits, with a time
  // thousands of years off: a client's own, kept.
  const traceId = "4bf92f3577b37da6a3ce929d0e0e4736";
  const kept = await send(current, "/health", { headers: { "x-request-id": traceId } });
  expect(kept.headers.get("x-request-id")).toBe(traceId);
});

test.each([
  ["too long", "a".repeat(65)],
  ["spaces", "abc def"],
  ["log injection", 'x"}\n{"level":"fatal'],
  ["html", "<script>"],
  ["empty", ""],
])("an unsafe incoming id (%s) is replaced", async (_label, incoming) => {
  current = buildTestApp();
  const headers = new Headers();
  headers.set("x-request-id", incoming.replace(/\n/g, " "));
  const response = await send(current, "/health", { headers: Object.fromEntries(headers) });
  const id = response.headers.get("x-request-id")!;
  expect(id).not.toBe(incoming);
  expect(acceptableRequestId(id)).toBe(true);
});

test.each([
  ["an API key", "pal_live_abcdefghijklmnop0123"],
  ["a test API key glued to text", "trace-pal_test_abcdefghijk"],
  ["a JWT", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"],
])(
  "an incoming id shaped like a credential (%s) is replaced, never logged",
  async (_label, incoming) => {
    current = buildTestApp({ env: { STRIPE_SECRET_KEY: "sk_test_CONFIGUREDSECRET0123456789" } });
    // Safe characters and length: only its shape refuses it.
    expect(/^[A-Za-z0-9._:-]{1,64}$/.test(incoming)).toBe(true);
    const response = await send(current, "/health", { headers: { "x-request-id": incoming } });
    const id = response.headers.get("x-request-id")!;
    expect(id).not.toBe(incoming);
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(current.logs.text).not.toContain(incoming);
    expect(current.logs.entries.find((e) => e.msg === "request")?.requestId).toBe(id);
  },
);

test("an id holding a configured secret is answered as it came, as any other kept id, and recorded under one made here: the answer does not say whether a string is a secret (probe 93f F1)", async () => {
  const secret = "Metr1cs-T0ken-Zq8xVb3nLw9pRt5yKd2";
  current = buildTestApp({ env: { METRICS_TOKEN: secret } });
  for (const incoming of [secret, "Metr1cs-T0ken-Zq8xVb3nLw9pRt5yKd3", secret.toUpperCase()]) {
    // An error's problem document carries it too: a 404.
    const response = await send(current, "/no-such-route", {
      headers: { "x-request-id": incoming },
    });
    expect(response.status).toBe(404);
    expect(response.headers.get("x-request-id")).toBe(incoming);
    expect(((await response.json()) as { requestId: string }).requestId).toBe(incoming);
  }
  // Recorded under an id made here: the secret reaches no log line.
  expect(current.logs.text).not.toContain(secret);
  expect(current.logs.text.toLowerCase()).not.toContain(secret.toLowerCase());
  const recorded = current.logs.entries
    .filter((entry) => entry.msg === "request")
    .map((entry) => entry.requestId);
  expect(recorded).toHaveLength(3);
  expect(recorded[0]).toMatch(/^[0-9a-f-]{36}$/);
  expect(recorded[1]).toBe("Metr1cs-T0ken-Zq8xVb3nLw9pRt5yKd3");
  expect(recorded[2]).toMatch(/^[0-9a-f-]{36}$/);
});
