/**
 * The Stripe webhook's signature check: the SDK's constructEventAsync over the raw body, 300 s
 * tolerance, every listed secret during a roll. Each refusal is 400 BAD_SIGNATURE, counted and
 * audited without the body.
 */
import { afterEach, expect, test } from "bun:test";
import { send } from "../../support/app";
import {
  auditRows,
  buildPaymentsApp,
  deliver,
  metricValue,
  OLD_WEBHOOK_SECRET,
  type PaymentsApp,
  signStripe,
  stripeEvent,
  WEBHOOK_SECRET,
} from "../../support/payments";
import { waitFor } from "../../support/wait";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const unknownType = () => stripeEvent("customer.created", { id: "cus_123", object: "customer" });

async function expectBadSignature(response: Response, failuresBefore: number) {
  expect(response.status).toBe(400);
  const problem = (await response.json()) as { code: string; detail: string };
  expect(problem.code).toBe("BAD_SIGNATURE");
  expect(response.headers.get("content-type")).toStartWith("application/problem+json");
  expect(
    await metricValue(current!, "webhook_signature_failures_total", { provider: "stripe" }),
  ).toBe(failuresBefore + 1);
}

test("a correctly signed delivery is acknowledged with 200", async () => {
  current = buildPaymentsApp();
  const response = await deliver(current, unknownType());
  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({ received: true, outcome: "ignored" });
  expect(
    await metricValue(current, "webhook_events_total", { provider: "stripe", outcome: "ignored" }),
  ).toBe(1);
});

test("the signature is checked over the exact bytes received, not a re-serialisation", async () => {
  current = buildPaymentsApp();
  const event = unknownType();
  // Spacing, key order and escapes that JSON.stringify(JSON.parse(...)) would not reproduce.
  const text = `{ "type" : "customer.created",\n "id":"${event.id}", "object":"event", "created": ${event.created},\n  "data": {"object": {"id": "cus_\\u0031", "object": "customer", "name": "Zo\\u00eb é"}} }`;
  const response = await deliver(current, text);
  expect(response.status).toBe(200);
});

test("a wrong secret, a body changed after signing, a missing header: 400 BAD_SIGNATURE, counted, audited without the body", async () => {
  current = buildPaymentsApp();
  const event = unknownType();
  const text = JSON.stringify(event);

  // Each from its own address: one address's failures are audited once a minute
  // (audit/once-per-window; refusal-audit-bound.test.ts).
  await expectBadSignature(
    await deliver(current, event, { secret: "whsec_someone_else_0123456789", peer: "192.0.2.60" }),
    0,
  );

  const signature = await signStripe(text);
  const tampered = text.replace("customer.created", "customer.deleted");
  const changed = await send(current, "/webhooks/stripe", {
    body: tampered,
    headers: { "stripe-signature": signature },
    peer: "192.0.2.61",
  });
  await expectBadSignature(changed, 1);

  const missing = await send(current, "/webhooks/stripe", { body: text, peer: "192.0.2.62" });
  await expectBadSignature(missing, 2);

  const garbage = await send(current, "/webhooks/stripe", {
    body: text,
    headers: { "stripe-signature": "t=abc,v1=nothex" },
    peer: "192.0.2.63",
  });
  await expectBadSignature(garbage, 3);

  const audited = auditRows(current, "webhook.signature_failed");
  expect(audited).toHaveLength(4);
  for (const row of audited) {
    expect(row.outcome).toBe("denied");
    expect(row.route).toBe("POST /webhooks/stripe");
    const detail = JSON.parse(row.detail) as Record<string, unknown>;
    expect(detail.provider).toBe("stripe");
    // Never the body or the header.
    expect(row.detail).not.toContain(event.id);
    expect(row.detail).not.toContain("v1=");
  }
  expect(JSON.parse(audited[2]!.detail).reason).toBe("missing Stripe-Signature header");
  // Nothing was recorded as delivered.
  const rows = current.db.$client.query("SELECT count(*) AS n FROM webhook_events").get() as {
    n: number;
  };
  expect(rows.n).toBe(0);
});

test("a timestamp older than 300 s is refused; one within it is accepted", async () => {
  current = buildPaymentsApp();
  const now = Math.floor(Date.now() / 1000);
  await expectBadSignature(await deliver(current, unknownType(), { timestamp: now - 301 }), 0);
  await expectBadSignature(await deliver(current, unknownType(), { timestamp: now - 3600 }), 1);
  const fresh = await deliver(current, unknownType(), { timestamp: now - 290 });
  expect(fresh.status).toBe(200);
});

test("during a secret roll both listed secrets verify; a secret no longer listed does not", async () => {
  current = buildPaymentsApp({
    env: { STRIPE_WEBHOOK_SECRET: `${WEBHOOK_SECRET},${OLD_WEBHOOK_SECRET}` },
  });
  expect((await deliver(current, unknownType(), { secret: WEBHOOK_SECRET })).status).toBe(200);
  expect((await deliver(current, unknownType(), { secret: OLD_WEBHOOK_SECRET })).status).toBe(200);
  current.close();

  // The roll is over: only the new secret is listed.
  current = buildPaymentsApp({ env: { STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET } });
  expect((await deliver(current, unknownType(), { secret: WEBHOOK_SECRET })).status).toBe(200);
  await expectBadSignature(
    await deliver(current, unknownType(), { secret: OLD_WEBHOOK_SECRET }),
    0,
  );
});

test("without STRIPE_WEBHOOK_SECRET the endpoint answers 501 NOT_CONFIGURED saying so, not to be retried, logged as a warning (probe 43c F1)", async () => {
  current = buildPaymentsApp({ env: { STRIPE_WEBHOOK_SECRET: undefined } });
  const response = await deliver(current, unknownType());
  expect(response.status).toBe(501);
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  expect(response.headers.get("retry-after")).toBeNull();
  const requestId = response.headers.get("x-request-id");
  expect(await response.json()).toMatchObject({
    type: "urn:palisade:problem:not-configured",
    status: 501,
    code: "NOT_CONFIGURED",
    detail: "Stripe webhooks are not configured on this service (STRIPE_WEBHOOK_SECRET is unset).",
    requestId,
  });
  // The access line is written once the response is sent: a warning, not an error.
  const logs = current.logs;
  const line = await waitFor(() => logs.entries.find((entry) => entry.requestId === requestId), {
    what: "the access line",
  });
  expect(line).toMatchObject({ level: "warn", route: "/webhooks/stripe", status: 501 });
});

test("the webhook is public and CSRF-exempt, and its body limit is the webhooks class's 256 KiB", async () => {
  current = buildPaymentsApp();
  // A browser-looking request with a session-like cookie and no CSRF token still reaches the check.
  const event = unknownType();
  const text = JSON.stringify(event);
  const response = await send(current, "/webhooks/stripe", {
    body: text,
    headers: {
      "stripe-signature": await signStripe(text),
      cookie: "palisade_session=whatever",
      origin: "https://evil.example",
    },
  });
  expect(response.status).toBe(200);

  // 100 KiB passes (over the default 64 KiB), 300 KiB does not.
  const padded = (size: number) =>
    JSON.stringify(
      stripeEvent("customer.created", { id: "cus_1", object: "customer", pad: "x".repeat(size) }),
    );
  expect((await deliver(current, padded(100 * 1024))).status).toBe(200);
  const tooBig = await deliver(current, padded(300 * 1024));
  expect(tooBig.status).toBe(413);
  expect(((await tooBig.json()) as { code: string }).code).toBe("PAYLOAD_TOO_LARGE");
});

test("the tolerance holds both ways: a signature dated more than 300 s ahead is refused", async () => {
  current = buildPaymentsApp();
  const now = Math.floor(Date.now() / 1000);
  const ahead = await deliver(current, unknownType(), { timestamp: now + 600 });
  await expectBadSignature(ahead, 0);
  // Within the tolerance ahead (a clock a little fast) is still Stripe's.
  const slightly = await deliver(current, unknownType(), { timestamp: now + 60 });
  expect(slightly.status).toBe(200);
});

test("every spelling of a post-dated timestamp the SDK would verify is refused: the time checked is the time signed", async () => {
  current = buildPaymentsApp();
  const now = Math.floor(Date.now() / 1000);
  const future = now + 100_000;
  const text = JSON.stringify(unknownType());
  // Signed over `<future>.<body>` with the real secret: what the SDK verifies for each spelling.
  const v1 = (await signStripe(text, WEBHOOK_SECRET, future))
    .split(",")
    .find((p) => p.startsWith("v1="))!;
  const spellings = [
    `t=${now},t=${future},${v1}`,
    `t=${future}a,${v1}`,
    `t=+${future},${v1}`,
    `t=${future}.5,${v1}`,
    `t=${future},t=${future},${v1}`,
    `t=0${future},${v1}`.replace(`t=0${future}`, `t=${future} `),
  ];
  let failures = 0;
  for (const header of spellings) {
    const response = await send(current, "/webhooks/stripe", {
      body: text,
      headers: { "stripe-signature": header, "content-type": "application/json" },
      peer: "54.187.174.169",
    });
    await expectBadSignature(response, failures++);
  }
  // The one plain spelling of a time now is still Stripe's.
  const fine = await send(current, "/webhooks/stripe", {
    body: text,
    headers: {
      "stripe-signature": await signStripe(text, WEBHOOK_SECRET, now),
      "content-type": "application/json",
    },
    peer: "54.187.174.169",
  });
  expect(fine.status).toBe(200);
});

test("the exact bytes: a body that only decodes to the signed text (a BOM, invalid UTF-8) is refused", async () => {
  current = buildPaymentsApp();
  const text = JSON.stringify(unknownType());
  const signature = await signStripe(text);
  const signed = new TextEncoder().encode(text);
  const withBom = new Uint8Array([0xef, 0xbb, 0xbf, ...signed]);
  const response = await current.app.handle(
    new Request("http://localhost/webhooks/stripe", {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": signature },
      body: withBom,
    }),
  );
  await expectBadSignature(response, 0);
  const genuine = await current.app.handle(
    new Request("http://localhost/webhooks/stripe", {
      method: "POST",
      headers: { "content-type": "application/json", "stripe-signature": signature },
      body: signed,
    }),
  );
  expect(genuine.status).toBe(200);
});

for (const contentType of [
  "Application/JSON",
  "application/json; charset=UTF-8",
  "APPLICATION/JSON ; charset=utf-8",
]) {
  test(`a correctly signed delivery sent as ${contentType} is verified, not reported as forged`, async () => {
    current = buildPaymentsApp();
    const text = JSON.stringify(unknownType());
    const response = await send(current, "/webhooks/stripe", {
      body: text,
      headers: { "stripe-signature": await signStripe(text), "content-type": contentType },
      peer: "54.187.174.169",
    });
    expect(response.status).toBe(200);
    expect(auditRows(current, "webhook.signature_failed")).toEqual([]);
  });
}

test("a POST with no body is a signature failure (400 BAD_SIGNATURE, counted, audited), never a 500 (probe 27c F2); signed, it is a malformed body (90h F3)", async () => {
  // The full app: the WhatsApp module is mounted beside this one, as in the service.
  current = buildPaymentsApp({ env: { WHATSAPP_APP_SECRET: "whatsapp-app-secret-0123456789" } });
  const bodiless: Record<string, string>[] = [
    {},
    { "content-length": "0" },
    { "stripe-signature": "t=1,v1=00" },
    { "stripe-signature": await signStripe("", "whsec_another_secret_0123456789") },
    { "stripe-signature": await signStripe("", undefined, Math.floor(Date.now() / 1000) - 600) },
    // The right signature spelt otherwise: upper case, or with a character more (probe 90j F4).
    {
      "stripe-signature": (await signStripe("")).replace(
        /v1=([0-9a-f]+)/,
        (_, hex: string) => `v1=${hex.toUpperCase()}`,
      ),
    },
    { "stripe-signature": (await signStripe("")).replace(/v1=([0-9a-f]+)/, "v1=$10") },
    { "stripe-signature": (await signStripe("")).replace(/v1=([0-9a-f]+)/, "v1=$1zz") },
  ];
  // Read as the SDK reads an item, `v1=<hex>=x` is `<hex>`: verified (probe 90m F4).
  const splitAtEquals = (await signStripe("")).replace(/v1=([0-9a-f]+)/, "v1=$1=x");
  let failures = 0;
  for (const headers of bodiless) {
    // Each from its own address: one address's failures are audited once a minute.
    const peer = `192.0.2.${70 + failures}`;
    await expectBadSignature(
      await send(current, "/webhooks/stripe", { method: "POST", headers, peer }),
      failures++,
    );
  }
  expect(auditRows(current, "webhook.signature_failed")).toHaveLength(bodiless.length);
  // Signed by the configured secret, no body is a verified body that is not JSON: no signature
  // failure (the SDK verifies no empty payload, and its refusal read as one).
  for (const [n, header] of [await signStripe(""), splitAtEquals].entries()) {
    const signed = await send(current, "/webhooks/stripe", {
      method: "POST",
      headers: { "stripe-signature": header },
      peer: `192.0.2.${90 + n}`,
    });
    expect(signed.status).toBe(400);
    expect(((await signed.json()) as { code: string }).code).toBe("MALFORMED_BODY");
  }
  expect(
    await metricValue(current, "webhook_signature_failures_total", { provider: "stripe" }),
  ).toBe(bodiless.length);
  expect(
    await metricValue(current, "webhook_events_total", { provider: "stripe", outcome: "failed" }),
  ).toBe(2);
  // An empty body sent as one is malformed JSON, as on the WhatsApp webhook.
  const empty = await send(current, "/webhooks/stripe", {
    headers: { "content-type": "application/json" },
    body: "",
  });
  expect(empty.status).toBe(400);
  expect(((await empty.json()) as { code: string }).code).toBe("MALFORMED_BODY");
});
