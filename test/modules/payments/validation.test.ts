/**
 * The bounds of an intent request, each at its edge, and the ids clients send. A refused request
 * never reaches Stripe.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { send } from "../../support/app";
import { bearer, type Session, signUp } from "../../support/auth";
import { buildPaymentsApp, createIntent, type PaymentsApp } from "../../support/payments";

let current: PaymentsApp;
let user: Session;
const MAX = 250_000;

beforeAll(async () => {
  current = buildPaymentsApp({
    env: { PAYMENT_MAX_AMOUNT: String(MAX), PAYMENT_CURRENCIES: "usd,eur,jpy" },
  });
  user = await signUp(current);
});
afterAll(() => current.close());

const valid = { amount: 1000, currency: "usd" };

async function expectAccepted(body: unknown, key?: string) {
  const before = current.stripe.calls.length;
  const response = await createIntent(current, bearer(user.accessToken), body, key);
  expect({
    status: response.status,
    body: response.status === 201 ? null : await response.text(),
  }).toEqual({
    status: 201,
    body: null,
  });
  expect(current.stripe.calls.length).toBe(before + 1);
}

async function expectRefused(body: unknown, field: string, key?: string | null) {
  const before = current.stripe.calls.length;
  const response = await createIntent(current, bearer(user.accessToken), body, key);
  expect(response.status).toBe(422);
  const problem = (await response.json()) as { code: string; errors: { field: string }[] };
  expect(problem.code).toBe("VALIDATION_FAILED");
  expect(problem.errors.map((e) => e.field)).toContain(field);
  expect(current.stripe.calls.length).toBe(before);
}

test("amount: an integer from 50 to PAYMENT_MAX_AMOUNT", async () => {
  await expectRefused({ ...valid, amount: 49 }, "body/amount");
  await expectAccepted({ ...valid, amount: 50 });
  await expectAccepted({ ...valid, amount: MAX });
  await expectRefused({ ...valid, amount: MAX + 1 }, "body/amount");
  await expectRefused({ ...valid, amount: 50.5 }, "body/amount");
  await expectRefused({ ...valid, amount: -100 }, "body/amount");
  await expectRefused({ currency: "usd" }, "body/amount");
});

test("currency: one of PAYMENT_CURRENCIES in any case, stored lower case", async () => {
  await expectAccepted({ ...valid, currency: "JPY" });
  expect(current.stripe.calls.at(-1)!.params.currency).toBe("jpy");
  await expectAccepted({ ...valid, currency: "Eur" });
  await expectRefused({ ...valid, currency: "gbp" }, "body/currency");
  await expectRefused({ ...valid, currency: "us" }, "body/currency");
  await expectRefused({ ...valid, currency: "usdd" }, "body/currency");
  await expectRefused({ ...valid, currency: "u$d" }, "body/currency");
});

test("description: at most 500 characters", async () => {
  await expectAccepted({ ...valid, description: "d".repeat(500) });
  await expectRefused({ ...valid, description: "d".repeat(501) }, "body/description");
});

test("metadata: an empty value is 422, never stored: Stripe would unset its key, and the two records would differ (probe 89e F3)", async () => {
  await expectAccepted({ ...valid, metadata: { order: "x" } });
  await expectRefused({ ...valid, metadata: { order: "" } }, "body/metadata/order");
});

test("description and metadata: an unpaired surrogate is 422, never a Stripe call (it was 503 'Stripe unavailable' on every retry)", async () => {
  await expectAccepted({ ...valid, description: "café 😀", metadata: { "clé 😀": "valeur 😀" } });
  for (const lone of ["\ud800", "\udc00", "a\ud83d", "\ude00b"]) {
    await expectRefused({ ...valid, description: lone }, "body/description");
    await expectRefused({ ...valid, metadata: { k: lone } }, "body/metadata");
    await expectRefused({ ...valid, metadata: { [lone]: "v" } }, "body/metadata");
  }
});

test("description and metadata: a NUL, or a control character in a metadata key, is 422, never a Stripe call (probe 29c F5)", async () => {
  await expectAccepted({
    ...valid,
    description: "line one\nline two\tend",
    metadata: { order: "a\nb\tc" },
  });
  const calls = current.stripe.calls.length;
  await expectRefused({ ...valid, description: "order\u0000 42" }, "body/description");
  await expectRefused({ ...valid, metadata: { order: "42\u0000" } }, "body/metadata");
  // Any other control in the text too: six bytes of JSON each in every list and export (probe
  // 87d F1: 61 KB a payment of U+0001).
  for (const control of ["\u0001", "\u001b", "\r", "\u007f", "\u0085", "\u009f"]) {
    await expectRefused({ ...valid, description: `order${control}42` }, "body/description");
    await expectRefused({ ...valid, metadata: { order: `42${control}` } }, "body/metadata");
  }
  for (const control of [
    "\u0000",
    "\n",
    "\t",
    "\u001b",
    "\u007f",
    "\u0085",
    "\u202e",
    "\u200b",
    "\u2028",
    "\u2029",
    "\u034f",
    "\u3164",
    "\u2800",
    "\ue000",
    "\ufdd0",
    "\u0378",
    "\ufffd",
    // Joiners, variation selectors and tags where they shape nothing (probe 40b F4).
    "\u200d",
    "\u200c",
    "\ufe0f",
    "\u{e0041}",
    "\u{e0100}",
    "\u180b",
    "\u202f\u200d\u202f",
    "\u{1f3fb}\ufe0f",
  ]) {
    await expectRefused({ ...valid, metadata: { [`or${control}der`]: "42" } }, "body/metadata");
  }
  for (const blank of [
    " ",
    "   ",
    " order",
    "order ",
    "\u3000",
    "order\u00a0id",
    "order  id",
    "order\u2005id",
    "order\tid",
    "cafe\u0301",
  ]) {
    await expectRefused({ ...valid, metadata: { [blank]: "42" } }, "body/metadata");
  }
  expect(current.stripe.calls.length).toBe(calls);
  // Names in any script, with spaces between words, are keys.
  await expectAccepted({
    ...valid,
    metadata: { "order id": "1", 注文番号: "2", "número de pedido": "3", café: "4" },
  });
  // Joiners and variation selectors that shape visible text (probe 33d F3).
  await expectAccepted({
    ...valid,
    metadata: {
      "❤️": "1",
      "👨\u200d👩\u200d👧": "2",
      "🏳️\u200d🌈": "3",
      "می\u200cخواهم": "4",
      "1️⃣": "5",
      "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}": "6",
      "ᠠ\u180B": "7",
      // Mongolian's vowel separator between two of its letters (probe 41a F2).
      "ᠬᠠᠳᠠ\u180Eᠠ": "8",
    },
  });
});

test("customerEmail: validated like an account email, stored normalised", async () => {
  await expectAccepted({ ...valid, customerEmail: "  Ana@Example.COM " });
  expect(current.stripe.calls.at(-1)!.params.receipt_email).toBe("Ana@example.com");
  for (const bad of [
    "not-an-email",
    "a@b",
    "ana\u200b@example.com",
    "ana@exa mple.com",
    "@example.com",
  ]) {
    await expectRefused({ ...valid, customerEmail: bad }, "body/customerEmail");
  }
});

test("metadata: at most 20 keys of at most 40 characters, string values of at most 500", async () => {
  const keys = (n: number) =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));
  await expectAccepted({ ...valid, metadata: keys(20) });
  await expectRefused({ ...valid, metadata: keys(21) }, "body/metadata");
  await expectAccepted({ ...valid, metadata: { ["k".repeat(40)]: "v" } });
  await expectRefused({ ...valid, metadata: { ["k".repeat(41)]: "v" } }, "body/metadata");
  await expectAccepted({ ...valid, metadata: { k: "v".repeat(500) } });
  await expectRefused({ ...valid, metadata: { k: "v".repeat(501) } }, "body/metadata/k");
  await expectRefused({ ...valid, metadata: { k: 5 } }, "body/metadata/k");
  await expectRefused({ ...valid, metadata: { k: { nested: "x" } } }, "body/metadata/k");
  await expectRefused({ ...valid, metadata: { "": "v" } }, "body/metadata");
  await expectRefused({ ...valid, metadata: { "a[b]": "v" } }, "body/metadata");
  await expectRefused({ ...valid, metadata: ["v"] }, "body/metadata");
});

test("unknown fields are refused, not dropped", async () => {
  await expectRefused({ ...valid, customer: "cus_123" }, "body/customer");
  await expectRefused({ ...valid, amount_capturable: 5 }, "body/amount_capturable");
});

test("Idempotency-Key: required, 1 to 255 printable ASCII characters; a comma reads as a second header", async () => {
  await expectRefused(valid, "headers/idempotency-key", null);
  await expectAccepted(valid, "k".repeat(255));
  await expectRefused(valid, "headers/idempotency-key", "k".repeat(256));
  await expectAccepted(valid, "~ !\"#$%&'()*+-./:;<=>?@[\\]^_`{|}");
  await expectRefused(valid, "headers/idempotency-key", "caf\u00e9");
  const before = current.stripe.calls.length;
  const twice = await createIntent(current, bearer(user.accessToken), valid, "a, b");
  expect(twice.status).toBe(400);
  expect(((await twice.json()) as { code: string }).code).toBe("DUPLICATE_HEADER");
  expect(current.stripe.calls.length).toBe(before);
});

test("payment ids from clients must look like Stripe's (pi_ and [A-Za-z0-9_]); others are 422 before any lookup", async () => {
  for (const bad of [
    "abc",
    "pi_",
    "pi_a-b",
    "ch_123",
    "pi_%27%20OR%201%3D1",
    `pi_${"a".repeat(253)}`,
  ]) {
    const response = await send(current, `/api/payments/${bad}`, {
      headers: bearer(user.accessToken),
    });
    expect(response.status).toBe(422);
    const refund = await send(current, `/api/admin/payments/${bad}/refund`, {
      body: {},
      headers: bearer(user.accessToken),
    });
    // Not an admin: refused before validation.
    expect(refund.status).toBe(403);
  }
  const longestValid = await send(current, `/api/payments/pi_${"a".repeat(252)}`, {
    headers: bearer(user.accessToken),
  });
  expect(longestValid.status).toBe(404);
});

test("a Stripe answer whose id or client secret does not match Stripe's patterns, or whose status a new intent cannot have, is not trusted: 502, nothing stored (probe 85a F2)", async () => {
  const before = (
    current.db.$client.query("SELECT count(*) AS n FROM payments").get() as { n: number }
  ).n;
  for (const fields of [
    { id: "pi_../../admin" },
    { id: "evt_123" },
    { client_secret: "something_else" },
    { client_secret: "pi_other_secret_abc" },
    { amount: 1 },
    { status: "bogus" },
    // Palisade's own words for what the events say later, not statuses Stripe gives an intent.
    { status: "failed" },
    { status: "refunded" },
    // Statuses of an intent confirmed or paid: one made without a payment method has neither.
    { status: "succeeded" },
    { status: "processing" },
    { status: "requires_capture" },
    { status: "requires_action" },
    { status: "canceled" },
  ]) {
    current.stripe.tamperNextIntent(fields);
    const response = await createIntent(current, bearer(user.accessToken), valid);
    expect(response.status).toBe(502);
    expect(((await response.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
  }
  const after = (
    current.db.$client.query("SELECT count(*) AS n FROM payments").get() as { n: number }
  ).n;
  expect(after).toBe(before);
});

test("a Stripe answer naming an intent the ledger holds for another owner, amount or currency is not trusted: 502, the key given back (probe 32b F3)", async () => {
  const other = await signUp(current);
  const made = await createIntent(current, bearer(other.accessToken), {
    amount: 1000,
    currency: "usd",
  });
  expect(made.status).toBe(201);
  const theirs = (await made.json()) as { id: string; clientSecret: string };
  // The upstream answers this user's new key with the other user's intent, consistent in itself.
  for (const body of [valid, { amount: 1000, currency: "eur" }]) {
    const key = `foreign-${body.currency}`;
    current.stripe.tamperNextIntent({ id: theirs.id, client_secret: theirs.clientSecret });
    const response = await createIntent(current, bearer(user.accessToken), body, key);
    expect(response.status).toBe(502);
    const text = await response.text();
    expect(JSON.parse(text).code).toBe("UPSTREAM_UNAVAILABLE");
    expect(text).not.toContain(theirs.clientSecret);
    // The key was given back, not stored with the other user's answer: a retry asks Stripe
    // again (which replays its answer to that key), and is not trusted either.
    const retry = await createIntent(current, bearer(user.accessToken), body, key);
    expect(retry.status).toBe(502);
    expect(await retry.text()).not.toContain(theirs.clientSecret);
    const stored = current.db.$client
      .query("SELECT count(*) AS n FROM payment_idempotency_keys WHERE key = ?")
      .get(key) as { n: number };
    expect(stored.n).toBe(0);
  }
  const row = current.db.$client
    .query("SELECT owner, amount FROM payments WHERE id = ?")
    .get(theirs.id) as { owner: string; amount: number };
  expect(row).toEqual({ owner: `user:${other.userId}`, amount: 1000 });
});

test("a Stripe answer naming this owner's intent of the same amount but other details is not trusted: 502, the key given back (probe 90o F2)", async () => {
  const first = { ...valid, description: "order 1", metadata: { order: "1" } };
  const made = await createIntent(current, bearer(user.accessToken), first, "order-1");
  expect(made.status).toBe(201);
  const mine = (await made.json()) as { id: string; clientSecret: string };
  for (const [key, body] of [
    ["order-2", { ...valid, description: "order 2", metadata: { order: "1" } }],
    ["order-2-metadata", { ...valid, description: "order 1", metadata: { order: "2" } }],
    ["order-2-email", { ...first, customerEmail: "buyer@example.com" }],
    ["order-2-bare", valid],
  ] as const) {
    current.stripe.tamperNextIntent({ id: mine.id, client_secret: mine.clientSecret });
    const response = await createIntent(current, bearer(user.accessToken), body, key);
    expect({ key, status: response.status }).toEqual({ key, status: 502 });
    const text = await response.text();
    expect(text).not.toContain(mine.clientSecret);
    expect(JSON.parse(text).detail).toContain("send the request with a new Idempotency-Key");
    const stored = current.db.$client
      .query("SELECT count(*) AS n FROM payment_idempotency_keys WHERE key = ?")
      .get(key) as { n: number };
    expect(stored.n).toBe(0);
  }
  // The same details again (its stored result lost), the metadata's keys in another order: Stripe
  // replays that key's intent, the payment.
  const twoKeys = { ...valid, metadata: { order: "3", cart: "9" } };
  const withTwo = await createIntent(current, bearer(user.accessToken), twoKeys, "order-3");
  const three = (await withTwo.json()) as { id: string };
  current.db.$client.query("DELETE FROM payment_idempotency_keys WHERE key = 'order-3'").run();
  const reordered = await createIntent(
    current,
    bearer(user.accessToken),
    { ...valid, metadata: { cart: "9", order: "3" } },
    "order-3",
  );
  expect(reordered.status).toBe(201);
  expect(((await reordered.json()) as { id: string }).id).toBe(three.id);
  current.db.$client.query("DELETE FROM payment_idempotency_keys WHERE key = 'order-1'").run();
  const again = await createIntent(current, bearer(user.accessToken), first, "order-1");
  expect(again.status).toBe(201);
  expect(((await again.json()) as { id: string }).id).toBe(mine.id);
});

test("an intent Stripe replays for this owner's lost key, the same payment, is still answered as a replay", async () => {
  const made = await createIntent(current, bearer(user.accessToken), valid, "replayed-own");
  const mine = (await made.json()) as { id: string; clientSecret: string };
  // Its stored result lost: the key row gone, Stripe's replay of the same intent arrives again.
  current.db.$client.query("DELETE FROM payment_idempotency_keys WHERE key = 'replayed-own'").run();
  current.stripe.tamperNextIntent({ id: mine.id, client_secret: mine.clientSecret });
  const again = await createIntent(current, bearer(user.accessToken), valid, "replayed-own");
  expect(again.status).toBe(201);
  expect(again.headers.get("idempotent-replayed")).toBe("true");
  expect(((await again.json()) as { id: string }).id).toBe(mine.id);
});

test("a metadata key is never echoed in a 422 unless a plain word: markup, controls or a long key name only its object (probe 84c F1)", async () => {
  const long = "x".repeat(601);
  for (const key of [
    "<img src=x onerror=alert(1)>",
    "k\u001b[31m",
    "\u202ekey",
    "k".repeat(3_000),
  ]) {
    const response = await createIntent(current, bearer(user.accessToken), {
      ...valid,
      metadata: { [key]: long },
    });
    expect(response.status).toBe(422);
    const problem = (await response.json()) as { errors: { field: string }[] };
    expect(problem.errors.map((e) => e.field)).toEqual(["body/metadata"]);
  }
  // A plain key is still named.
  await expectRefused({ ...valid, metadata: { order_id: long } }, "body/metadata/order_id");
});

/** Every UTF-16 unit of `text` as a `\uXXXX` escape, as a client's JSON library may write it. */
const escaped = (text: string) =>
  Array.from(
    { length: text.length },
    (_, i) => `\\u${text.charCodeAt(i).toString(16).padStart(4, "0")}`,
  ).join("");

/** An intent's JSON with every character of its keys and string values escaped, after a BOM. */
function escapedIntent(fields: Record<string, number | string | Record<string, string>>): string {
  const value = (field: number | string | Record<string, string>): string =>
    typeof field === "number"
      ? String(field)
      : typeof field === "string"
        ? `"${escaped(field)}"`
        : `{${Object.entries(field)
            .map(([key, text]) => `"${escaped(key)}":"${escaped(text)}"`)
            .join(",")}}`;
  return `\uFEFF{${Object.entries(fields)
    .map(([key, field]) => `"${escaped(key)}":${value(field)}`)
    .join(",")}}`;
}

test("the longest spelling of a legal intent fits the route's body limit: every character escaped is 201, not 413 (probe 87d F7)", async () => {
  const metadata = Object.fromEntries(
    Array.from({ length: 20 }, (_, i) => [`k${String(i).padStart(39, "0")}`, "é".repeat(500)]),
  );
  const body = escapedIntent({
    amount: MAX,
    currency: "usd",
    description: "é".repeat(500),
    metadata,
  });
  expect(new TextEncoder().encode(body).byteLength).toBeGreaterThan(64 * 1024);
  // An app of its own: an earlier test leaves this file's local Stripe answering with one intent.
  const own = buildPaymentsApp({ env: { PAYMENT_MAX_AMOUNT: String(MAX) } });
  try {
    const buyer = await signUp(own);
    const made = await createIntent(own, bearer(buyer.accessToken), body);
    expect(made.status).toBe(201);
    const { id } = (await made.json()) as { id: string };
    const read = await send(own, `/api/payments/${id}`, { headers: bearer(buyer.accessToken) });
    const payment = (await read.json()) as { metadata: Record<string, string> };
    expect(payment.metadata[`k${"0".repeat(38)}0`]).toBe("é".repeat(500));
  } finally {
    own.close();
  }
  // With the longest email too, every field at its bound: the figure the limit is sized to.
  const longest = escapedIntent({
    amount: Number.MAX_SAFE_INTEGER,
    currency: "usd",
    description: "é".repeat(500),
    customerEmail: "e".repeat(320),
    metadata,
  });
  const bytes = new TextEncoder().encode(longest).byteLength;
  expect(bytes).toBe(70_181);
  const limit = current.config.bodyLimits.payments;
  expect(limit).toBeGreaterThanOrEqual(bytes);
  expect(limit - 1024).toBeLessThan(bytes);
});
