/**
 * An error code from the payment provider is the answering host's text: only a code shaped like
 * Stripe's own reaches the client's problem detail or a log line; any other is `unrecognised_code`.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import {
  stripeErrorCode,
  UNRECOGNISED_CODE,
  UNRECOGNISED_STATUS,
} from "../../../src/modules/payments/stripe-client";
import { STRIPE_ERROR_CODES } from "../../../src/modules/payments/stripe-error-codes";
import { send } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import {
  auditRows,
  buildPaymentsApp,
  createIntent,
  type PaymentsApp,
  pay,
  refundStatusStripes,
  STRIPE_TEST_KEY,
  succeed,
} from "../../support/payments";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});
const withRefundStatus = refundStatusStripes();

const INTENTS = "/v1/payment_intents";
/** The probe's code: the caller's Authorization value, a line separator and 3,000 × `A`. */
const HOSTILE_CODE = `${STRIPE_TEST_KEY}\u2028${"A".repeat(3000)}`;

function expectNothingOfTheCode(text: string) {
  expect(text).not.toContain(STRIPE_TEST_KEY);
  expect(text).not.toContain("\u2028");
  expect(text).not.toContain("\\u2028");
  expect(text).not.toContain("AAAAAAAA");
}

/** One `kind` line naming the code only as unrecognised_code, and nothing of the code logged. */
function expectOneUnrecognisedLine(target: PaymentsApp, kind: string) {
  const logged = target.logs.entries.filter((entry) => entry.kind === kind);
  expect(logged).toHaveLength(1);
  expect(logged[0]!.reason).toBe(UNRECOGNISED_CODE);
  expectNothingOfTheCode(target.logs.text);
}

function warnings(target: PaymentsApp, msg: string) {
  return target.logs.entries.filter((entry) => entry.msg === msg);
}

describe("stripeErrorCode", () => {
  test("keeps Stripe's own codes and types, replaces anything else by one fixed word", () => {
    for (const code of [
      "card_declined",
      "invalid_request_error",
      "amount_too_small",
      "rate_limit",
    ]) {
      expect(stripeErrorCode(code)).toBe(code);
    }
    for (const code of [
      HOSTILE_CODE,
      // Shaped like Stripe's, but none of them: an upstream's text (probes 19b–19e).
      "a",
      "x".repeat(64),
      "e2e_1",
      "card_declined_",
      "x".repeat(65),
      "",
      "Card_Declined",
      "card declined",
      "card-declined",
      "code\n",
      "sk_test_x\u2028",
      "<script>",
      undefined,
      null,
      42,
      { code: "card_declined" },
    ]) {
      expect(stripeErrorCode(code)).toBe(UNRECOGNISED_CODE);
    }
    expect(UNRECOGNISED_CODE).toBe("unrecognised_code");
  });
});

/** A new user's intent (42.00 USD), Stripe's next answer to an intent being `failure`. */
async function intentMeeting(target: PaymentsApp, failure: { status: number; code: string }) {
  const user = await signUp(target);
  target.stripe.failNext(INTENTS, { ...failure, shouldRetry: false });
  return createIntent(target, bearer(user.accessToken), { amount: 4200, currency: "usd" });
}

describe("a hostile upstream error code", () => {
  test("a refusal (4xx) is 502 whose detail names unrecognised_code; the log reason is the same word", async () => {
    current = buildPaymentsApp();
    const response = await intentMeeting(current, { status: 400, code: HOSTILE_CODE });
    expect(response.status).toBe(502);
    const text = await response.text();
    const problem = JSON.parse(text) as { code: string; detail: string };
    expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
    expect(problem.detail).toBe("The payment provider refused the request (unrecognised_code).");
    expectNothingOfTheCode(text);
    expectOneUnrecognisedLine(current, "refused");
  });

  test("a configured secret, or any piece of one, shaped like a Stripe code is not shown, and hiding it tells nothing (probes 19b–19e)", async () => {
    current = buildPaymentsApp();
    // The test key is all lower case: shaped like a Stripe code. Neither it nor any piece of it is
    // shown; nor is any other text, so whether a text is hidden says nothing of the secrets.
    for (const piece of [
      STRIPE_TEST_KEY,
      STRIPE_TEST_KEY.slice(0, -1),
      STRIPE_TEST_KEY.slice(0, 11),
      STRIPE_TEST_KEY.slice(-4),
      "zz_not_a_piece",
    ]) {
      expect(stripeErrorCode(piece)).toBe(UNRECOGNISED_CODE);
    }
    const response = await intentMeeting(current, { status: 402, code: STRIPE_TEST_KEY });
    expect(response.status).toBe(502);
    const text = await response.text();
    expect((JSON.parse(text) as { detail: string }).detail).toBe(
      "The payment provider refused the request (unrecognised_code).",
    );
    expectNothingOfTheCode(text);
  });

  test("an outage (5xx) keeps its fixed detail and logs unrecognised_code", async () => {
    current = buildPaymentsApp();
    const response = await intentMeeting(current, { status: 503, code: HOSTILE_CODE });
    expect(response.status).toBe(503);
    expectNothingOfTheCode(await response.text());
    expectOneUnrecognisedLine(current, "unavailable");
  });

  test("a refused refund: the same, and the payment stays refundable", async () => {
    current = buildPaymentsApp();
    const alice = await signUp(current);
    const admin = await signUp(current, { role: "admin" });
    const id = await pay(current, alice);
    await succeed(current, id);
    current.stripe.failNext("/v1/refunds", { status: 402, code: HOSTILE_CODE, shouldRetry: false });
    const refund = () =>
      send(current!, `/api/admin/payments/${id}/refund`, {
        body: {},
        headers: bearer(admin.accessToken),
      });
    const refused = await refund();
    expect(refused.status).toBe(502);
    const text = await refused.text();
    expect((JSON.parse(text) as { detail: string }).detail).toBe(
      "The payment provider refused the request (unrecognised_code).",
    );
    expectNothingOfTheCode(text);
    expect(warnings(current, "stripe did not make the refund")[0]!.reason).toBe(UNRECOGNISED_CODE);
    expectNothingOfTheCode(current.logs.text);
    expect((await refund()).status).toBe(200);
  });

  test("Stripe's own codes are still shown as they are", async () => {
    current = buildPaymentsApp();
    const response = await intentMeeting(current, { status: 400, code: "amount_too_small" });
    expect(((await response.json()) as { detail: string }).detail).toBe(
      "The payment provider refused the request (amount_too_small).",
    );
  });
});

describe("a hostile upstream refund status", () => {
  test("is answered and audited as unrecognised_status, and the refund is left unsettled", async () => {
    const target = withRefundStatus(HOSTILE_CODE).app;
    const alice = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    const id = await pay(target, alice);
    await succeed(target, id);
    const response = await send(target, `/api/admin/payments/${id}/refund`, {
      body: {},
      headers: bearer(admin.accessToken),
    });
    expect(response.status).toBe(200);
    const text = await response.text();
    const answer = JSON.parse(text) as {
      refund: { status: string };
      payment: { amountRefunded: number };
    };
    expect(answer.refund.status).toBe(UNRECOGNISED_STATUS);
    expect(answer.payment.amountRefunded).toBe(0);
    expectNothingOfTheCode(text);
    const [row] = auditRows(target, "payment.refund");
    expect(JSON.stringify(row)).toContain(UNRECOGNISED_STATUS);
    expectNothingOfTheCode(JSON.stringify(row));
    expectNothingOfTheCode(target.logs.text);
  });

  test("a Stripe-shaped status is kept as Stripe wrote it", async () => {
    const target = withRefundStatus("requires_action").app;
    const alice = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    const id = await pay(target, alice);
    await succeed(target, id);
    const response = await send(target, `/api/admin/payments/${id}/refund`, {
      body: {},
      headers: bearer(admin.accessToken),
    });
    expect(((await response.json()) as { refund: { status: string } }).refund.status).toBe(
      "requires_action",
    );
  });
});

test("the codes kept are exactly those the Stripe SDK declares: a payment's last error codes and the raw error types", () => {
  const sdk = (path: string) =>
    readFileSync(new URL(`../../../node_modules/stripe/esm/${path}`, import.meta.url), "utf8");
  const codes = sdk("resources/PaymentIntents.d.ts")
    .split("\n")
    .filter((line) => line.trim().startsWith("type Code =") && line.includes("'card_declined'"));
  expect(codes).toHaveLength(1);
  const types = /export type RawErrorType = ([^;]+);/.exec(sdk("Types.d.ts"));
  const quoted = (text: string) => [...text.matchAll(/'([a-z0-9_]+)'/g)].map((match) => match[1]!);
  const declared = new Set([...quoted(codes[0]!), ...quoted(types![1]!)]);
  expect([...STRIPE_ERROR_CODES].sort()).toEqual([...declared].sort());
});

test("a Stripe that cannot be reached is logged as a network failure, not as an unrecognised code (probe 81f F2)", async () => {
  const closed = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response() });
  const url = `http://127.0.0.1:${closed.port}`;
  closed.stop(true);
  current = buildPaymentsApp({ env: { STRIPE_API_URL: url } });
  const user = await signUp(current);
  const response = await createIntent(current, bearer(user.accessToken), {
    amount: 4200,
    currency: "usd",
  });
  expect(response.status).toBe(503);
  const logged = current.logs.entries.filter((entry) => entry.kind === "unavailable");
  expect(logged.map((entry) => entry.reason)).toEqual(["network_error"]);
  // A 500 without a code is named by the type Stripe wrote, not by the SDK's class.
  current.close();
  current = buildPaymentsApp();
  await intentMeeting(current, { status: 500, code: "" });
  const typed = current.logs.entries.filter((entry) => entry.kind === "unavailable");
  expect(typed.map((entry) => entry.reason)).toEqual(["api_error"]);
  // A refused key is named so, not as the client's invalid request (probe 81g F1).
  await intentMeeting(current, { status: 401, code: "" });
  const refused = current.logs.entries.filter((entry) => entry.kind === "refused");
  expect(refused.map((entry) => entry.reason)).toEqual(["authentication_error"]);
});
