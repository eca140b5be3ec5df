/** Creating, listing and reading payment intents through the real SDK against a local Stripe. */
import { afterEach, expect, test } from "bun:test";
import { LIST_PAGE_BYTES } from "../../../src/modules/payments/ledger";
import { stripeIdempotencyKey } from "../../../src/modules/payments/service";
import { send } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import {
  auditRows,
  buildPaymentsApp,
  createIntent,
  metricValue,
  type PaymentsApp,
} from "../../support/payments";
import { startRedirectingUpstream } from "../../support/redirecting-upstream";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("a user creates an intent: 201 with Stripe's id and client secret, the row is theirs, Stripe got a form body and a scoped key", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  const response = await createIntent(
    current,
    bearer(user.accessToken),
    {
      amount: 1234,
      currency: "EUR",
      description: "Two coffees",
      customerEmail: "Buyer@EXAMPLE.com.",
      metadata: { order: "A-17", channel: "chat" },
    },
    "order-A-17",
  );
  expect(response.status).toBe(201);
  const body = (await response.json()) as Record<string, unknown>;
  expect(body).toEqual({
    id: expect.stringMatching(/^pi_/),
    clientSecret: expect.stringMatching(/^pi_[A-Za-z0-9]+_secret_/),
    status: "requires_payment_method",
    amount: 1234,
    currency: "eur",
  });

  const [call] = current.stripe.calls;
  expect(current.stripe.calls).toHaveLength(1);
  expect(call!.path).toBe("/v1/payment_intents");
  expect(call!.params).toMatchObject({
    amount: "1234",
    currency: "eur",
    description: "Two coffees",
    receipt_email: "Buyer@example.com",
    "metadata[order]": "A-17",
    "metadata[channel]": "chat",
  });
  // The key Stripe sees is the client's, scoped to its owner.
  expect(call!.idempotencyKey).toBe(stripeIdempotencyKey(`user:${user.userId}`, "order-A-17"));

  const row = current.db.$client
    .query(
      "SELECT owner, amount, currency, status, customer_email, metadata FROM payments WHERE id = ?",
    )
    .get(body.id as string) as Record<string, unknown>;
  expect(row).toEqual({
    owner: `user:${user.userId}`,
    amount: 1234,
    currency: "eur",
    status: "requires_payment_method",
    customer_email: "Buyer@example.com",
    metadata: JSON.stringify({ order: "A-17", channel: "chat" }),
  });
  const audit = auditRows(current, "payment.intent.created");
  expect(audit).toHaveLength(1);
  expect(audit[0]!.actor).toBe(`user:${user.userId}`);
  expect(JSON.parse(audit[0]!.detail)).toEqual({
    amount: 1234,
    currency: "eur",
    paymentId: body.id,
  });
  expect(await metricValue(current, "payments_total", { status: "requires_payment_method" })).toBe(
    1,
  );
});

test("an API key with the payments scope pays for its owner; one without it is 403 and Stripe is not called", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  const payKey = createKey(current, ["payments"], user.userId);
  const chatKey = createKey(current, ["chat"], user.userId);
  const made = await createIntent(
    current,
    { "x-api-key": payKey.key },
    { amount: 500, currency: "usd" },
  );
  expect(made.status).toBe(201);
  const { id } = (await made.json()) as { id: string };
  // The key acts for the user: the user sees the payment as theirs.
  const seen = await send(current, `/api/payments/${id}`, { headers: bearer(user.accessToken) });
  expect(seen.status).toBe(200);

  const refused = await createIntent(
    current,
    { "x-api-key": chatKey.key },
    { amount: 500, currency: "usd" },
  );
  expect(refused.status).toBe(403);
  expect(((await refused.json()) as { code: string }).code).toBe("FORBIDDEN");
  expect(current.stripe.calls).toHaveLength(1);

  const anonymous = await createIntent(current, {}, { amount: 500, currency: "usd" });
  expect(anonymous.status).toBe(401);
});

test("a page of GET /api/payments holds at most LIST_PAGE_BYTES of payments' text, its first always; the cursor goes on to the rest (probe 87d F1)", async () => {
  current = buildPaymentsApp({ env: { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" } });
  const user = await signUp(current);
  // ~31 KB of text each (three bytes a character), the most a payment holds.
  const metadata = Object.fromEntries(
    Array.from({ length: 20 }, (_, i) => [`key ${i}`, "€".repeat(500)]),
  );
  const ids: string[] = [];
  for (let i = 0; i < 40; i++) {
    const response = await createIntent(current, bearer(user.accessToken), {
      amount: 100 + i,
      currency: "usd",
      description: "€".repeat(500),
      metadata,
    });
    expect(response.status).toBe(201);
    ids.push(((await response.json()) as { id: string }).id);
  }
  const pages: string[][] = [];
  let cursor: number | null = null;
  do {
    const query: string = cursor === null ? "?limit=100" : `?limit=100&cursor=${cursor}`;
    const response = await send(current, `/api/payments${query}`, {
      headers: bearer(user.accessToken),
    });
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text.length).toBeLessThan(LIST_PAGE_BYTES + 64 * 1024);
    const page = JSON.parse(text) as { payments: { id: string }[]; nextCursor: number | null };
    pages.push(page.payments.map((payment) => payment.id));
    cursor = page.nextCursor;
  } while (cursor !== null);
  expect(pages.length).toBe(2);
  expect(pages[0]!.length).toBeGreaterThan(20);
  expect(pages.flat()).toEqual([...ids].reverse());
});

test("GET /api/payments lists the caller's payments newest first, a page at a time", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const response = await createIntent(current, bearer(user.accessToken), {
      amount: 100 + i,
      currency: "usd",
    });
    ids.push(((await response.json()) as { id: string }).id);
  }
  const seen: string[] = [];
  let cursor: number | null = null;
  let pages = 0;
  do {
    const query: string = cursor === null ? "?limit=2" : `?limit=2&cursor=${cursor}`;
    const response = await send(current, `/api/payments${query}`, {
      headers: bearer(user.accessToken),
    });
    expect(response.status).toBe(200);
    const page = (await response.json()) as {
      payments: { id: string; amount: number }[];
      nextCursor: number | null;
    };
    expect(page.payments.length).toBeLessThanOrEqual(2);
    seen.push(...page.payments.map((p) => p.id));
    cursor = page.nextCursor;
    pages++;
  } while (cursor !== null);
  expect(pages).toBe(3);
  expect(seen).toEqual([...ids].reverse());

  const one = await send(current, `/api/payments/${ids[0]}`, { headers: bearer(user.accessToken) });
  expect(await one.json()).toMatchObject({
    id: ids[0],
    amount: 100,
    currency: "usd",
    status: "requires_payment_method",
    amountRefunded: 0,
    disputed: false,
  });
});

test("a payment whose seq was written into the file past what a cursor carries (past 2^53 − 1) is left out of the list, and every other page still reached (probes 29c F3, 29e F2)", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const response = await createIntent(current, bearer(user.accessToken), {
      amount: 100 + i,
      currency: "usd",
    });
    ids.push(((await response.json()) as { id: string }).id);
  }
  for (const seq of ["9007199254740993", "9007199254740992", "0", "-5"]) {
    // The second made now sorts first, under a seq no cursor can carry back (past 2^53 − 1, read
    // rounded: probe 29e F2; or below the 1 a cursor starts at: 29f F4).
    current.db.$client.query(`UPDATE payments SET seq = ${seq} WHERE id = ?`).run(ids[1]!);
    await expectListed(current, user, [ids[3]!, ids[2]!, ids[0]!]);
  }
  // Sixteen digits up to 2^53 − 1 are a cursor like any other (probe 91b F2).
  for (const seq of ["1000000000000000", "9007199254740991"]) {
    current.db.$client.query(`UPDATE payments SET seq = ${seq} WHERE id = ?`).run(ids[1]!);
    await expectListed(current, user, [ids[1]!, ids[3]!, ids[2]!, ids[0]!]);
  }
  // Still read by its id.
  const moved = await send(current, `/api/payments/${ids[1]}`, {
    headers: bearer(user.accessToken),
  });
  expect(moved.status).toBe(200);
});

/** Every payment the user's list shows, page by page (one a page), in order. */
async function expectListed(
  target: Parameters<typeof send>[0],
  user: { accessToken: string },
  expected: string[],
) {
  const seen: string[] = [];
  let cursor: number | null = null;
  do {
    const query: string = cursor === null ? "?limit=1" : `?limit=1&cursor=${cursor}`;
    const response = await send(target, `/api/payments${query}`, {
      headers: bearer(user.accessToken),
    });
    expect(response.status).toBe(200);
    const page = (await response.json()) as {
      payments: { id: string }[];
      nextCursor: number | null;
    };
    seen.push(...page.payments.map((p) => p.id));
    cursor = page.nextCursor;
  } while (cursor !== null);
  expect(seen).toEqual(expected);
}

test("a redirect from the host at STRIPE_API_URL is not followed: the payment never reaches the host it names (probe 43b's class)", async () => {
  const upstream = startRedirectingUpstream();
  try {
    current = buildPaymentsApp({
      env: { STRIPE_API_URL: upstream.url },
    });
    const user = await signUp(current);
    const response = await createIntent(
      current,
      bearer(user.accessToken),
      { amount: 4200, currency: "gbp", description: "order 1234" },
      "redirected",
    );
    expect(response.status).toBeGreaterThanOrEqual(502);
    expect(((await response.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
    expect(upstream.elsewhere).toEqual([]);
  } finally {
    upstream.stop();
  }
});

test("an owner makes at most PAYMENT_DAILY_INTENTS new intents in 24 hours, its keys with it; a replay is not another (probe 83b F1)", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock, env: { PAYMENT_DAILY_INTENTS: "3" } });
  const target = current;
  const alice = await signUp(target);
  const { key } = createKey(target, ["payments"], alice.userId);
  const body = { amount: 1000, currency: "usd" };
  const first = await createIntent(target, bearer(alice.accessToken), body, "daily-1");
  expect(first.status).toBe(201);
  expect((await createIntent(target, bearer(alice.accessToken), body)).status).toBe(201);
  // A key acting for alice makes hers.
  expect((await createIntent(target, { "x-api-key": key }, body)).status).toBe(201);
  // The first again under its Idempotency-Key is that intent, not another: answered at the cap.
  const replay = await createIntent(target, bearer(alice.accessToken), body, "daily-1");
  expect(replay.status).toBe(201);
  expect(replay.headers.get("idempotent-replayed")).toBe("true");
  clock.advance(60 * 60_000);
  // An hour on (the access token has expired: the key asks), alice's day is spent.
  const over = await createIntent(target, { "x-api-key": key }, body);
  expect(over.status).toBe(429);
  expect(await over.json()).toMatchObject({ code: "QUOTA_EXCEEDED" });
  // Until the oldest is a day old: 23 hours from here.
  expect(Number(over.headers.get("retry-after"))).toBe(23 * 60 * 60);
  // Another account has its own.
  const bob = await signUp(target);
  expect((await createIntent(target, bearer(bob.accessToken), body)).status).toBe(201);
  expect(target.stripe.created("/v1/payment_intents")).toBe(4);
  // A day after the first, one more.
  clock.advance(23 * 60 * 60_000);
  expect((await createIntent(target, { "x-api-key": key }, body)).status).toBe(201);
});

test("the daily cap's Retry-After: a running claim's lease when claims hold it, never more than a day after a clock step (probe 83h F1, F2)", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock, env: { PAYMENT_DAILY_INTENTS: "2" } });
  const target = current;
  const alice = await signUp(target);
  const body = { amount: 1000, currency: "usd" };
  // Two at Stripe, not answered yet: the cap is held by their claims.
  const first = target.stripe.holdNext("/v1/payment_intents");
  const a = createIntent(target, bearer(alice.accessToken), body);
  await first.reached;
  const second = target.stripe.holdNext("/v1/payment_intents");
  const b = createIntent(target, bearer(alice.accessToken), body);
  await second.reached;
  const held = await createIntent(target, bearer(alice.accessToken), body);
  expect(held.status).toBe(429);
  expect(Number(held.headers.get("retry-after"))).toBeLessThanOrEqual(120);
  first.release();
  second.release();
  expect((await a).status).toBe(201);
  expect((await b).status).toBe(201);
  // Made, they hold it for the day; with the clock stepped back two days, still a day at most.
  clock.advance(-2 * 24 * 60 * 60_000);
  const stepped = await createIntent(target, bearer(alice.accessToken), body);
  expect(stepped.status).toBe(429);
  expect(Number(stepped.headers.get("retry-after"))).toBe(24 * 60 * 60);
});

test("rows written into the database file count for nothing against the daily cap, and push none of the owner's own out of it (probe 85a F1)", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock, env: { PAYMENT_DAILY_INTENTS: "3" } });
  const target = current;
  const alice = await signUp(target);
  const owner = `user:${alice.userId}`;
  const file = target.db.$client;
  // Intents dated ahead (in the day for good), claims running, and intents with a higher `seq`
  // from long ago: none sealed.
  for (let i = 0; i < 5; i++) {
    file.run(
      `INSERT INTO payments (id, owner, amount, currency, status, created_at, updated_at, seal)
       VALUES (?, ?, 1000, 'usd', 'requires_payment_method', 9000000000000000, 0, 'forged')`,
      [`pi_forgedahead${i}`, owner],
    );
    file.run(
      `INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at, seal)
       VALUES (?, ?, 'h', 'pending', ?, 'forged')`,
      [owner, `forged-claim-${i}`, clock.now()],
    );
  }
  const body = { amount: 1000, currency: "usd" };
  for (let i = 0; i < 3; i++) {
    expect((await createIntent(target, bearer(alice.accessToken), body)).status).toBe(201);
  }
  for (let i = 0; i < 5; i++) {
    file.run(
      `INSERT INTO payments (seq, id, owner, amount, currency, status, created_at, updated_at, seal)
       VALUES (?, ?, ?, 1000, 'usd', 'requires_payment_method', 0, 0, 'forged')`,
      [1_000_000 + i, `pi_forgedlater${i}`, owner],
    );
  }
  const over = await createIntent(target, bearer(alice.accessToken), body);
  expect(over.status).toBe(429);
  expect(await over.json()).toMatchObject({ code: "QUOTA_EXCEEDED" });
  // The day of the three made, not the forged rows' years.
  expect(Number(over.headers.get("retry-after"))).toBe(24 * 60 * 60);
  expect(target.stripe.created("/v1/payment_intents")).toBe(3);
  const reported = file
    .query<{ n: number }, []>(
      "SELECT count(*) AS n FROM audit_events WHERE type = 'payment.tampered'",
    )
    .get()!.n;
  expect(reported).toBeGreaterThan(0);
});

test("thousands of rows written into the file for one owner are not all read by each of its intents: at most the cap and 256 more, each reported once (probe 85d F1)", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock, env: { PAYMENT_DAILY_INTENTS: "3" } });
  const target = current;
  const alice = await signUp(target);
  const file = target.db.$client;
  file.run(
    `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
     INSERT INTO payments (id, owner, amount, currency, status, created_at, updated_at, seal)
     SELECT 'pi_forged' || i, ?, 1000, 'usd', 'succeeded', ? - i, 0, 'forged' FROM n`,
    [`user:${alice.userId}`, clock.now()],
  );
  const reported = () =>
    file
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM audit_events WHERE type = 'payment.tampered'",
      )
      .get()!.n;
  const body = { amount: 1000, currency: "usd" };
  expect((await createIntent(target, bearer(alice.accessToken), body)).status).toBe(201);
  target.services.audit.flush();
  const first = reported();
  expect(first).toBeGreaterThan(0);
  expect(first).toBeLessThanOrEqual(3 + 256);
  for (let i = 0; i < 2; i++) {
    expect((await createIntent(target, bearer(alice.accessToken), body)).status).toBe(201);
  }
  const over = await createIntent(target, bearer(alice.accessToken), body);
  expect(over.status).toBe(429);
  expect(Number(over.headers.get("retry-after"))).toBe(24 * 60 * 60);
  // The same rows read again are not reported again.
  target.services.audit.flush();
  expect(reported()).toBeLessThanOrEqual(3 + 256);
});

test("a payments id sequence the file put at its end is named, and Stripe is not asked to make an intent its row could not record (probe 85d F5)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const alice = await signUp(target);
  target.db.$client.run(
    "INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('payments', 9223372036854775807)",
  );
  const made = await createIntent(target, bearer(alice.accessToken), {
    amount: 1000,
    currency: "usd",
  });
  expect(made.status).toBe(500);
  expect(target.stripe.created("/v1/payment_intents")).toBe(0);
  expect(JSON.stringify(target.logs.entries)).toContain(
    "the payments' id sequence (sqlite_sequence) is 9223372036854775807",
  );
});
