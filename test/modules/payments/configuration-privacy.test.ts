/** Payments without STRIPE_SECRET_KEY (501, /ready still ready), and what privacy does to payments. */
import { afterEach, expect, test } from "bun:test";
import { paymentLedgerOf } from "../../../src/modules/payments/ledger";
import {
  PAYMENTS_EXPORT_PAGE,
  PAYMENTS_STRIPPED_PART,
} from "../../../src/modules/payments/privacy";
import { createPaymentSeal, SEALED_PAYMENT_COLUMNS } from "../../../src/modules/payments/seal";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, STRONG_PASSWORD, signUp } from "../../support/auth";
import { buildPaymentsApp, createIntent, ROOMY_LIMITS, succeed } from "../../support/payments";
import { waitFor } from "../../support/wait";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("without STRIPE_SECRET_KEY every payment route answers 501 NOT_CONFIGURED saying so, with no Retry-After, logged as a warning (probe 43c F1)", async () => {
  current = buildTestApp({ env: ROOMY_LIMITS });
  const user = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const calls = [
    createIntent(current, bearer(user.accessToken), { amount: 500, currency: "usd" }),
    send(current, "/api/payments", { headers: bearer(user.accessToken) }),
    send(current, "/api/payments/pi_123", { headers: bearer(user.accessToken) }),
    send(current, "/api/admin/payments/pi_123/refund", {
      body: {},
      headers: bearer(admin.accessToken),
    }),
  ];
  for (const response of await Promise.all(calls)) {
    expect(response.status).toBe(501);
    expect(response.headers.get("content-type")).toBe("application/problem+json");
    // Not temporary: nothing to come back for.
    expect(response.headers.get("retry-after")).toBeNull();
    const problem = (await response.json()) as Record<string, unknown>;
    expect(problem).toMatchObject({
      type: "urn:palisade:problem:not-configured",
      title: "This feature is not configured on this service",
      status: 501,
      code: "NOT_CONFIGURED",
      detail: "Payments are not configured on this service (STRIPE_SECRET_KEY is unset).",
      requestId: response.headers.get("x-request-id")!,
    });
  }
  // Each access line (written once its response is sent) a warning, never an error: not a fault
  // of the service.
  const logs = current.logs;
  const unconfigured = () => logs.entries.filter((entry) => entry.status === 501);
  await waitFor(() => unconfigured().length === 4, { what: "the four access lines" });
  const lines = unconfigured();
  expect(lines.map((entry) => `${entry.level} ${entry.method} ${entry.route}`).sort()).toEqual([
    "warn GET /api/payments",
    "warn GET /api/payments/:id",
    "warn POST /api/admin/payments/:id/refund",
    "warn POST /api/payments/intents",
  ]);
  // Who may call still comes first.
  expect((await send(current, "/api/payments")).status).toBe(401);
});

test("/ready reports payments not_configured without failing, and up once a key is set", async () => {
  current = buildTestApp();
  const ready = await send(current, "/ready");
  expect(ready.status).toBe(200);
  const body = (await ready.json()) as {
    status: string;
    checks: Record<string, { status: string }>;
  };
  expect(body.status).toBe("ready");
  expect(body.checks.payments?.status).toBe("not_configured");
  expect(body.checks.database?.status).toBe("up");
  current.close();

  current = buildPaymentsApp();
  const configured = (await (await send(current, "/ready")).json()) as {
    checks: Record<string, { status: string }>;
  };
  expect(configured.checks.payments?.status).toBe("up");
});

test("export includes the user's payments; erasure keeps the rows for accounting without email, description or metadata", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const made = await createIntent(current, bearer(alice.accessToken), {
    amount: 2500,
    currency: "usd",
    description: "Alice's order",
    customerEmail: "alice.private@example.com",
    metadata: { name: "Alice Liddell" },
  });
  const { id } = (await made.json()) as { id: string };
  await succeed(current, id);
  await createIntent(current, bearer(bob.accessToken), { amount: 700, currency: "usd" });

  const exported = await send(current, "/api/me/export", { headers: bearer(alice.accessToken) });
  expect(exported.status).toBe(200);
  const document = (await exported.json()) as { payments: Record<string, unknown>[] };
  expect(document.payments).toHaveLength(1);
  expect(document.payments[0]).toMatchObject({
    id,
    amount: 2500,
    status: "succeeded",
    description: "Alice's order",
    customerEmail: "alice.private@example.com",
    metadata: { name: "Alice Liddell" },
  });
  expect(JSON.stringify(document)).not.toContain("_secret_");

  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
    body: { password: STRONG_PASSWORD },
  });
  expect(erased.status).toBeLessThan(300);
  const row = current.db.$client
    .query(
      "SELECT owner, amount, currency, status, description, customer_email AS email, metadata, client_secret AS secret FROM payments WHERE id = ?",
    )
    .get(id) as Record<string, unknown>;
  expect(row).toMatchObject({
    amount: 2500,
    currency: "usd",
    status: "succeeded",
    description: null,
    email: null,
    metadata: null,
    secret: null,
  });
  expect(row.owner).not.toContain(alice.userId);
  expect(row.owner).toBe(current.services.audit.pseudonymOf(`user:${alice.userId}`));
  const keys = current.db.$client
    .query("SELECT count(*) AS n FROM payment_idempotency_keys WHERE owner = ?")
    .get(`user:${alice.userId}`) as { n: number };
  expect(keys.n).toBe(0);
  // Bob's payment is untouched.
  const bobRows = current.db.$client
    .query("SELECT count(*) AS n FROM payments WHERE owner = ?")
    .get(`user:${bob.userId}`) as { n: number };
  expect(bobRows.n).toBe(1);
});

test("erasure strips the user's payment whose seq the file put past 2^53, and no other owner's payment at the seq it rounds to (53a F2's class)", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const mine = await createIntent(current, bearer(alice.accessToken), {
    amount: 2500,
    currency: "usd",
    customerEmail: "alice.private@example.com",
  });
  const theirs = await createIntent(current, bearer(bob.accessToken), {
    amount: 700,
    currency: "usd",
    customerEmail: "bob.private@example.com",
  });
  const aliceId = ((await mine.json()) as { id: string }).id;
  const bobId = ((await theirs.json()) as { id: string }).id;
  // Alice's at 2^53 + 1, which JavaScript reads as 2^53: Bob's seq.
  const sqlite = current.db.$client;
  sqlite.run("UPDATE payments SET seq = 9007199254740992 WHERE id = ?", [bobId]);
  sqlite.run("UPDATE payments SET seq = 9007199254740993 WHERE id = ?", [aliceId]);
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
    body: { password: STRONG_PASSWORD },
  });
  expect(erased.status).toBeLessThan(300);
  const rows = sqlite
    .query("SELECT id, owner, customer_email AS email FROM payments ORDER BY amount")
    .all();
  expect(rows).toEqual([
    { id: bobId, owner: `user:${bob.userId}`, email: "bob.private@example.com" },
    {
      id: aliceId,
      owner: current.services.audit.pseudonymOf(`user:${alice.userId}`),
      email: null,
    },
  ]);
});

test("erasure strips the user's payment whose owner the file moved to another user or to no one, by what its seal names, and resealed for the pseudonym (probe 72a F1)", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const intent = (accessToken: string, customerEmail: string) =>
    createIntent(current!, bearer(accessToken), {
      amount: 2500,
      currency: "usd",
      customerEmail,
      description: customerEmail,
    }).then(async (response) => ((await response.json()) as { id: string }).id);
  const toNoOne = await intent(alice.accessToken, "alice.one@example.com");
  const toBob = await intent(alice.accessToken, "alice.two@example.com");
  const bobs = await intent(bob.accessToken, "bob.private@example.com");
  const sqlite = current.db.$client;
  sqlite.run("UPDATE payments SET owner = ? WHERE id = ?", [
    "user:00000000-0000-0000-0000-000000000000",
    toNoOne,
  ]);
  sqlite.run("UPDATE payments SET owner = ? WHERE id = ?", [`user:${bob.userId}`, toBob]);
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
    body: { password: STRONG_PASSWORD },
  });
  expect(erased.status).toBeLessThan(300);
  const pseudonym = current.services.audit.pseudonymOf(`user:${alice.userId}`);
  const rows = sqlite
    .query(
      "SELECT id, owner, customer_email AS email, description, client_secret AS secret FROM payments ORDER BY seq",
    )
    .all();
  expect(rows).toEqual([
    { id: toNoOne, owner: pseudonym, email: null, description: null, secret: null },
    { id: toBob, owner: pseudonym, email: null, description: null, secret: null },
    {
      id: bobs,
      owner: `user:${bob.userId}`,
      email: "bob.private@example.com",
      description: "bob.private@example.com",
      // Never kept since probe 87d F6; one an earlier release stored is stripped by erasure too.
      secret: null,
    },
  ]);
  // Given back, stripped and resealed for the pseudonym: every row matches its seal again.
  const sealer = createPaymentSeal(current.config.audit.secretKey);
  const sealed = sqlite
    .query(`SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments`)
    .all() as Parameters<typeof sealer.intact.payment>[0][];
  expect(sealed.map((row) => sealer.intact.payment(row))).toEqual([true, true, true]);
  const bobsPayments = await send(current, "/api/payments", { headers: bearer(bob.accessToken) });
  expect(((await bobsPayments.json()) as { payments: unknown[] }).payments).toHaveLength(1);
});

test("a long payment history is exported whole, in order, a page at a time, and erased a part at a time, other requests served between the parts (probe 81b F1)", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const ledger = paymentLedgerOf(current.services);
  const now = Date.now();
  const insert = (owner: string, i: number) => {
    const id = `pi_history${owner === `user:${bob.userId}` ? "bob" : ""}${String(i).padStart(5, "0")}`;
    ledger.insert({
      id,
      owner,
      amount: 1000 + i,
      currency: "usd",
      status: "succeeded",
      clientSecret: `${id}_secret_probe`,
      description: `order ${i}`,
      customerEmail: "alice.private@example.com",
      createdAt: now,
      updatedAt: now,
    });
    return id;
  };
  const total = 2 * Math.max(PAYMENTS_EXPORT_PAGE, PAYMENTS_STRIPPED_PART) + 7;
  const mine = Array.from({ length: total }, (_, i) => insert(`user:${alice.userId}`, i));
  insert(`user:${bob.userId}`, 0);

  const exported = await send(current, "/api/me/export", { headers: bearer(alice.accessToken) });
  expect(exported.status).toBe(200);
  const document = (await exported.json()) as { payments: { id: string }[] };
  expect(document.payments.map((payment) => payment.id)).toEqual(mine);

  const sqlite = current.db.$client;
  const owned = sqlite.query<{ n: number }, [string]>(
    "SELECT count(*) AS n FROM payments WHERE owner = ?",
  );
  const account = sqlite.query<{ n: number }, [string]>(
    "SELECT count(*) AS n FROM users WHERE id = ?",
  );
  // What other work finds between the erasure's steps: some stripped, the account still there.
  const seenPartWay: number[] = [];
  const sampler = setInterval(() => {
    const left = owned.get(`user:${alice.userId}`)!.n;
    if (left > 0 && left < total && account.get(alice.userId)!.n === 1) seenPartWay.push(left);
  }, 1);
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
    body: { password: STRONG_PASSWORD },
  });
  clearInterval(sampler);
  expect(erased.status).toBe(204);
  expect(seenPartWay.length).toBeGreaterThan(0);
  expect(Math.min(...seenPartWay)).toBeLessThanOrEqual(total - PAYMENTS_STRIPPED_PART);

  const pseudonym = current.services.audit.pseudonymOf(`user:${alice.userId}`);
  expect(owned.get(`user:${alice.userId}`)!.n).toBe(0);
  expect(owned.get(pseudonym)!.n).toBe(total);
  const leftIdentifying = sqlite
    .query<{ n: number }, [string]>(
      "SELECT count(*) AS n FROM payments WHERE owner = ? AND (customer_email IS NOT NULL OR description IS NOT NULL OR client_secret IS NOT NULL)",
    )
    .get(pseudonym)!.n;
  expect(leftIdentifying).toBe(0);
  // Resealed for the pseudonym, every one; Bob's untouched.
  const sealer = createPaymentSeal(current.config.audit.secretKey);
  const sealed = sqlite
    .query(`SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments`)
    .all() as Parameters<typeof sealer.intact.payment>[0][];
  expect(sealed.filter((row) => !sealer.intact.payment(row))).toEqual([]);
  expect(owned.get(`user:${bob.userId}`)!.n).toBe(1);
});

test("the export lists the Idempotency-Keys the user's intents were asked under, with the intent each made, never the response stored with it; none of another's (probe 85c F1)", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const body = { amount: 2500, currency: "usd" };
  const made = await createIntent(
    current,
    bearer(alice.accessToken),
    body,
    "order-for-Jane-Doe-42",
  );
  const { id } = (await made.json()) as { id: string };
  await createIntent(current, bearer(bob.accessToken), body, "bobs-order-7");

  const exported = await send(current, "/api/me/export", { headers: bearer(alice.accessToken) });
  expect(exported.status).toBe(200);
  const text = await exported.text();
  const document = JSON.parse(text) as { paymentIdempotencyKeys: Record<string, unknown>[] };
  expect(document.paymentIdempotencyKeys).toEqual([
    {
      key: "order-for-Jane-Doe-42",
      state: "done",
      claimedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      paymentId: id,
    },
  ]);
  expect(text).not.toContain("bobs-order-7");
  expect(text).not.toContain("_secret_");
  // A key written into the file for her is not hers.
  current.db.$client.run(
    `INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at, seal)
     VALUES (?, 'forged-key', 'h', 'pending', 1, 'forged')`,
    [`user:${alice.userId}`],
  );
  const again = await send(current, "/api/me/export", { headers: bearer(alice.accessToken) });
  expect(await again.text()).not.toContain("forged-key");
});
