/**
 * Idempotency-Key on POST /api/payments/intents: replay, conflict, concurrency (one process and
 * two), scoping to the owner, and what a Stripe failure leaves behind.
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { createApp } from "../../../src/app";
import { createLogger } from "../../../src/logging/logger";
import type { PaymentsFeature } from "../../../src/modules/payments/feature";
import { paymentMetrics } from "../../../src/modules/payments/metrics";
import {
  CLAIM_LEASE_MS,
  PaymentService,
  requestHash,
  stripeIdempotencyKey,
} from "../../../src/modules/payments/service";
import {
  createStripe,
  STRIPE_ANSWER_BYTES,
  StripeGateway,
} from "../../../src/modules/payments/stripe-client";

import { createServices } from "../../../src/services";
import { LogCapture, secondProcess, send, TEST_PASSWORD_HASHING } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import {
  buildPaymentsApp,
  createIntent,
  type PaymentsApp,
  STRIPE_TEST_KEY,
} from "../../support/payments";
import { waitFor } from "../../support/wait";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const INTENTS = "/v1/payment_intents";
const body = { amount: 4200, currency: "gbp", metadata: { cart: "c-1" } };

function intentCalls(target: PaymentsApp) {
  return target.stripe.calls.filter((call) => call.path === INTENTS).length;
}

test("the same key and body replay the first response without a second Stripe call", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  const first = await createIntent(current, bearer(user.accessToken), body, "replay-1");
  expect(first.status).toBe(201);
  const firstBody = await first.json();
  // Key order in the body does not make it another request.
  const again = await createIntent(
    current,
    bearer(user.accessToken),
    { metadata: { cart: "c-1" }, currency: "gbp", amount: 4200 },
    "replay-1",
  );
  expect(again.status).toBe(201);
  expect(again.headers.get("idempotent-replayed")).toBe("true");
  expect(await again.json()).toEqual(firstBody);
  expect(intentCalls(current)).toBe(1);
  const rows = current.db.$client.query("SELECT count(*) AS n FROM payments").get() as {
    n: number;
  };
  expect(rows.n).toBe(1);
});

test("the same key with another body is 409 CONFLICT, and Stripe is not called", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  expect((await createIntent(current, bearer(user.accessToken), body, "conflict-1")).status).toBe(
    201,
  );
  for (const other of [
    { ...body, amount: 4201 },
    { ...body, currency: "eur" },
    { ...body, metadata: { cart: "c-2" } },
    { ...body, description: "x" },
  ]) {
    const response = await createIntent(current, bearer(user.accessToken), other, "conflict-1");
    expect(response.status).toBe(409);
    expect(((await response.json()) as { code: string }).code).toBe("CONFLICT");
  }
  expect(intentCalls(current)).toBe(1);
});

test("10 concurrent requests with one key make one Stripe call and all get its result", async () => {
  current = buildPaymentsApp();
  current.stripe.delayMs = 150;
  const user = await signUp(current);
  const responses = await Promise.all(
    Array.from({ length: 10 }, () =>
      createIntent(current!, bearer(user.accessToken), body, "race-1"),
    ),
  );
  const statuses = responses.map((r) => r.status);
  expect(statuses).toEqual(Array(10).fill(201));
  const ids = new Set(
    await Promise.all(responses.map(async (r) => ((await r.json()) as { id: string }).id)),
  );
  expect(ids.size).toBe(1);
  expect(intentCalls(current)).toBe(1);
});

test("concurrent requests with one key in two processes on one file make one Stripe call", async () => {
  current = buildPaymentsApp();
  current.stripe.delayMs = 150;
  const user = await signUp(current);
  const other = secondProcess(current);
  try {
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        createIntent(i % 2 === 0 ? current! : other, bearer(user.accessToken), body, "race-2"),
      ),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(10).fill(201));
    expect(intentCalls(current)).toBe(1);
  } finally {
    other.close();
  }
});

test("a request with the key of one still at Stripe waits for its result", async () => {
  current = buildPaymentsApp();
  current.stripe.delayMs = 1_000;
  const user = await signUp(current);
  const first = createIntent(current, bearer(user.accessToken), body, "slow-1");
  await Bun.sleep(100);
  const second = await createIntent(current, bearer(user.accessToken), body, "slow-1");
  expect(second.status).toBe(201);
  expect(second.headers.get("idempotent-replayed")).toBe("true");
  expect((await first).status).toBe(201);
  expect(intentCalls(current)).toBe(1);
});

test("a request waiting on a key still at Stripe keeps waiting through another connection's write lock, and replays the result (probe 50b F3)", async () => {
  current = buildPaymentsApp();
  current.stripe.delayMs = 1_000;
  const user = await signUp(current);
  const first = createIntent(current, bearer(user.accessToken), body, "locked-wait");
  await Bun.sleep(100);
  const waiting = createIntent(current, bearer(user.accessToken), body, "locked-wait");
  // Another process's (or a backup's) write lock, held across many of the wait's polls and
  // given back before Stripe answers the first request.
  await Bun.sleep(100);
  const other = new Database(current.db.$client.filename);
  other.run("BEGIN IMMEDIATE");
  await Bun.sleep(500);
  other.run("COMMIT");
  other.close();
  const [one, two] = await Promise.all([first, waiting]);
  expect(one.status).toBe(201);
  expect(two.status).toBe(201);
  expect(two.headers.get("idempotent-replayed")).toBe("true");
  expect(intentCalls(current)).toBe(1);
});

test("a pending key the file dates further ahead than a claim's lease is taken over at once, and pruned if never asked again and dated more than a day ahead (probes 50b F2, 51b F2)", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  const owner = `user:${user.userId}`;
  const hash = requestHash({
    amount: body.amount,
    currency: body.currency,
    metadata: body.metadata,
  });
  const insert = current.db.$client.query(
    "INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at) VALUES (?, ?, ?, 'pending', ?)",
  );
  insert.run(owner, "ahead-1", hash, Date.now() + 10 * 365 * 86_400_000);
  // Held, it would be answered 409 after the 10 s wait for a claim that runs.
  const response = await createIntent(current, bearer(user.accessToken), body, "ahead-1");
  expect(response.status).toBe(201);
  expect(intentCalls(current)).toBe(1);

  insert.run(owner, "ahead-2", hash, 9e15);
  // A claim still at Stripe when the clock was stepped back minutes: kept (probe 51b F2).
  insert.run(owner, "stepped-back", hash, Date.now() + 10 * 60_000);
  insert.run(owner, "within-lease", hash, Date.now() + 60_000);
  const feature = current.services.features.find((f) => f.name === "payments") as PaymentsFeature;
  feature.service.prune(Date.now());
  const left = current.db.$client
    .query("SELECT key FROM payment_idempotency_keys WHERE owner = ? ORDER BY key")
    .all(owner) as { key: string }[];
  expect(left.map((row) => row.key)).toEqual(["ahead-1", "stepped-back", "within-lease"]);
});

test("past its wait, a request whose key is still at Stripe is told so (in_progress, answered 409 with Retry-After)", async () => {
  current = buildPaymentsApp();
  current.stripe.delayMs = 1_000;
  const user = await signUp(current);
  const first = createIntent(current, bearer(user.accessToken), body, "slow-2");
  await Bun.sleep(100);
  // Another process's service on the same file, configured to wait only 100 ms.
  const feature = current.services.features.find((f) => f.name === "payments") as PaymentsFeature;
  const impatient = new PaymentService({
    db: current.db,
    clock: current.services.clock,
    logger: current.logger,
    audit: current.services.audit,
    ledger: feature.ledger,
    metrics: paymentMetrics(current.services.registry),
    gateway: new StripeGateway(
      createStripe({ secretKey: STRIPE_TEST_KEY, apiUrl: current.stripe.url }),
    ),
    inProgressWaitMs: 100,
  });
  const outcome = await impatient.createIntent(
    `user:${user.userId}`,
    "slow-2",
    { amount: body.amount, currency: body.currency, metadata: body.metadata },
    { actor: `user:${user.userId}`, ip: null, route: "test", requestId: "test" },
  );
  expect(outcome).toEqual({ kind: "in_progress" });
  expect((await first).status).toBe(201);
  expect(intentCalls(current)).toBe(1);
});

test("a claim left by a process that died mid-call is taken over after its lease, with the same Stripe key", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  const owner = `user:${user.userId}`;
  current.db.$client
    .query(
      "INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at) VALUES (?, ?, ?, 'pending', ?)",
    )
    .run(
      owner,
      "crashed-1",
      requestHash({ amount: body.amount, currency: body.currency, metadata: body.metadata }),
      Date.now() - CLAIM_LEASE_MS - 1_000,
    );
  const response = await createIntent(current, bearer(user.accessToken), body, "crashed-1");
  expect(response.status).toBe(201);
  expect(current.stripe.calls.at(-1)!.idempotencyKey).toBe(
    stripeIdempotencyKey(owner, "crashed-1"),
  );
});

test("a claim taken over after its lease and given back by the retry that took it is no erasure: the first request's intent is the live user's, answered 201, never canceled (probe 83d F1)", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock });
  const alice = await signUp(current);
  const held = current.stripe.holdNext(INTENTS);
  const first = createIntent(current, bearer(alice.accessToken), body, "slow-1");
  await held.reached;
  // Stripe is slow past the claim's lease (or the clock stepped): the retry takes the claim over,
  // Stripe refuses it while the first is still with it, and the retry gives the claim back.
  clock.advance(CLAIM_LEASE_MS + 1_000);
  current.stripe.failNext(
    INTENTS,
    {
      status: 409,
      type: "idempotency_error",
      code: "idempotency_key_in_use",
      message: "in use",
      kept: false,
    },
    5,
  );
  const retry = await createIntent(current, bearer(alice.accessToken), body, "slow-1");
  expect(retry.status).toBe(503);
  held.release();
  const answer = await first;
  expect(answer.status).toBe(201);
  const made = (await answer.json()) as { id: string; clientSecret: string };
  expect([...current.stripe.intents.values()].map((intent) => intent.status)).toEqual([
    "requires_payment_method",
  ]);
  const row = current.db.$client
    .query("SELECT owner, client_secret FROM payments WHERE id = ?")
    .get(made.id) as { owner: string; client_secret: string | null };
  // The client secret is the client's, in the answer; the payment does not keep it (probe 87d F6).
  expect(made.clientSecret).toStartWith(made.id);
  expect(row).toEqual({ owner: `user:${alice.userId}`, client_secret: null });
  const listed = await send(current, "/api/payments", { headers: bearer(alice.accessToken) });
  expect(((await listed.json()) as { payments: { id: string }[] }).payments).toEqual([
    expect.objectContaining({ id: made.id }),
  ]);
  // The key again is that intent (Stripe replays it for the owner's key).
  const again = await createIntent(current, bearer(alice.accessToken), body, "slow-1");
  expect(again.status).toBe(201);
  expect(((await again.json()) as { id: string }).id).toBe(made.id);
});

test("a key is its owner's: another user's identical key and body is a new intent, never the first user's", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const a = await createIntent(current, bearer(alice.accessToken), body, "shared-key");
  const b = await createIntent(current, bearer(bob.accessToken), body, "shared-key");
  expect(a.status).toBe(201);
  expect(b.status).toBe(201);
  expect(b.headers.get("idempotent-replayed")).toBeNull();
  const [aBody, bBody] = (await Promise.all([a.json(), b.json()])) as {
    id: string;
    clientSecret: string;
  }[];
  expect(bBody!.id).not.toBe(aBody!.id);
  expect(bBody!.clientSecret).not.toBe(aBody!.clientSecret);
  expect(intentCalls(current)).toBe(2);
  // Stripe saw two different keys, so its own replay cannot cross owners either.
  const keys = current.stripe.calls.map((c) => c.idempotencyKey);
  expect(new Set(keys).size).toBe(2);
  // The user's own API key shares the user's keys: it replays the user's intent.
  const aliceKey = createKey(current, ["payments"], alice.userId);
  const viaKey = await createIntent(current, { "x-api-key": aliceKey.key }, body, "shared-key");
  expect(viaKey.status).toBe(201);
  expect(((await viaKey.json()) as { id: string }).id).toBe(aBody!.id);
  expect(intentCalls(current)).toBe(2);
});

test("a Stripe outage is 503 UPSTREAM_UNAVAILABLE with Retry-After and releases the key: the retry with it succeeds", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, { status: 503, shouldRetry: false });
  const failed = await createIntent(current, bearer(user.accessToken), body, "outage-1");
  expect(failed.status).toBe(503);
  expect(failed.headers.get("retry-after")).toBe("5");
  expect(((await failed.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
  const claims = current.db.$client
    .query("SELECT count(*) AS n FROM payment_idempotency_keys")
    .get() as {
    n: number;
  };
  expect(claims.n).toBe(0);

  const retried = await createIntent(current, bearer(user.accessToken), body, "outage-1");
  expect(retried.status).toBe(201);
  expect(retried.headers.get("idempotent-replayed")).toBeNull();
  expect(intentCalls(current)).toBe(2);
});

test("a 408 or 425 from Stripe (or a proxy before it: nothing was refused) is 503 UPSTREAM_UNAVAILABLE as an outage is, the key released (probe 84g F1's class)", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  for (const status of [408, 425]) {
    current.stripe.failNext(INTENTS, { status });
    const failed = await createIntent(current, bearer(user.accessToken), body, `early-${status}`);
    expect({ status, answered: failed.status }).toEqual({ status, answered: 503 });
    expect(((await failed.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
    const retried = await createIntent(current, bearer(user.accessToken), body, `early-${status}`);
    expect(retried.status).toBe(201);
  }
});

test("a Stripe answer without end is read no further than its bound: 503 UPSTREAM_UNAVAILABLE, the key released for the retry (probe 54a F1's class)", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, { status: 200, floodBytes: 128 * 1024 * 1024 });
  const failed = await createIntent(current, bearer(user.accessToken), body, "flood-1");
  expect(failed.status).toBe(503);
  expect(((await failed.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
  await waitFor(() => current!.stripe.flooded.cancelled === 1);
  // The bound, and what the loopback connection's buffers held when it was closed.
  expect(current.stripe.flooded.bytesSent).toBeLessThan(STRIPE_ANSWER_BYTES + 24 * 1024 * 1024);
  const retried = await createIntent(current, bearer(user.accessToken), body, "flood-1");
  expect(retried.status).toBe(201);
});

test("the SDK retries a transient 503 itself with the same key: one intent, one 201", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, { status: 503 });
  const response = await createIntent(current, bearer(user.accessToken), body, "transient-1");
  expect(response.status).toBe(201);
  const calls = current.stripe.calls.filter((c) => c.path === INTENTS);
  expect(calls).toHaveLength(2);
  expect(calls[0]!.idempotencyKey).toBe(calls[1]!.idempotencyKey);
});

test("a 500 Stripe keeps for the key (and replays to the SDK's own retry) is walked past to the next derived key: one 201, the same keys on every retry (probe 59a F1)", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, { status: 500 });
  const response = await createIntent(current, bearer(user.accessToken), body, "kept-500");
  expect(response.status).toBe(201);
  const created = (await response.json()) as { id: string };
  const calls = current.stripe.calls.filter((c) => c.path === INTENTS);
  const first = calls[0]!.idempotencyKey!;
  expect(calls.map((c) => [c.idempotencyKey, c.replayed])).toEqual([
    [first, false],
    [first, true],
    [`${first}_1`, false],
  ]);
  // The same Idempotency-Key again: the stored intent, no Stripe call.
  const again = await createIntent(current, bearer(user.accessToken), body, "kept-500");
  expect(again.status).toBe(201);
  expect(((await again.json()) as { id: string }).id).toBe(created.id);
  expect(intentCalls(current)).toBe(3);
});

test("a 500 Stripe keeps, answered 503 with the key given back: the retry with the same Idempotency-Key, as the 503 says, makes the intent (probe 59a F1: 503 for a day)", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, { status: 500, shouldRetry: false });
  const failed = await createIntent(current, bearer(user.accessToken), body, "outage-500");
  expect(failed.status).toBe(503);
  expect(((await failed.json()) as { detail: string }).detail).toContain(
    "retry with the same Idempotency-Key",
  );
  const retried = await createIntent(current, bearer(user.accessToken), body, "outage-500");
  expect(retried.status).toBe(201);
  expect(current.stripe.created(INTENTS)).toBe(2);
  // Another walk past the same kept error on the next key gives the same keys in the same order.
  const keys = current.stripe.calls.filter((c) => c.path === INTENTS).map((c) => c.idempotencyKey);
  expect(keys).toEqual([keys[0]!, keys[0]!, `${keys[0]}_1`]);
});

test("no key is walked to past 30 s into the request, so the walk ends inside the key's claim; the next retry walks on (probe 59d F2)", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock });
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, { status: 500, shouldRetry: false });
  expect((await createIntent(current, bearer(user.accessToken), body, "slow")).status).toBe(503);
  // Stripe's replay of the kept 500 comes 31 s into the retry.
  const held = current.stripe.holdNext(INTENTS);
  const slow = createIntent(current, bearer(user.accessToken), body, "slow");
  await held.reached;
  clock.advance(31_000);
  held.release();
  const stopped = await slow;
  expect(stopped.status).toBe(503);
  expect(((await stopped.json()) as { detail: string }).detail).toContain(
    "retry with the same Idempotency-Key",
  );
  expect(intentCalls(current)).toBe(2);
  expect((await createIntent(current, bearer(user.accessToken), body, "slow")).status).toBe(201);
  const keys = current.stripe.calls.filter((c) => c.path === INTENTS).map((c) => c.idempotencyKey);
  expect(keys).toEqual([keys[0]!, keys[0]!, keys[0]!, `${keys[0]}_1`]);
});

test("past ten keys each holding a kept 500, the answer says to use a new Idempotency-Key, without Retry-After", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, { status: 500, shouldRetry: false }, 10);
  for (let attempt = 0; attempt < 10; attempt++) {
    expect((await createIntent(current, bearer(user.accessToken), body, "ten")).status).toBe(503);
  }
  const stuck = await createIntent(current, bearer(user.accessToken), body, "ten");
  expect(stuck.status).toBe(502);
  expect(stuck.headers.get("retry-after")).toBeNull();
  expect(((await stuck.json()) as { detail: string }).detail).toContain(
    "retry with a new Idempotency-Key",
  );
  expect((await createIntent(current, bearer(user.accessToken), body, "fresh")).status).toBe(201);
});

test("Stripe refusing the request (4xx) is 502 with Stripe's code, and the key is released", async () => {
  current = buildPaymentsApp();
  const user = await signUp(current);
  current.stripe.failNext(INTENTS, {
    status: 400,
    code: "amount_too_small",
    shouldRetry: false,
  });
  const refused = await createIntent(current, bearer(user.accessToken), body, "refused-1");
  expect(refused.status).toBe(502);
  const problem = (await refused.json()) as { code: string; detail: string };
  expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
  expect(problem.detail).toContain("amount_too_small");
  expect((await createIntent(current, bearer(user.accessToken), body, "refused-1")).status).toBe(
    201,
  );
});

test("Stripe refusing the request while another connection holds the write lock is still its 502, logged; the key is given back once the lock goes, and a retry is a fresh attempt at once (probe 43a F2)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const user = await signUp(target);
  target.stripe.delayMs = 300;
  target.stripe.failNext(INTENTS, { status: 400, code: "amount_too_small", shouldRetry: false });
  const answered = createIntent(target, bearer(user.accessToken), body, "refused-locked");
  // Another process (a CLI command, a backup) takes the write lock while Stripe works.
  const other = new Database(target.databasePath);
  const claimOf = () =>
    other
      .query("SELECT state FROM payment_idempotency_keys WHERE key = ?")
      .get("refused-locked") as { state: string } | null;
  try {
    await Bun.sleep(100);
    other.run("BEGIN IMMEDIATE");
    const refused = await answered;
    expect(refused.status).toBe(502);
    const problem = (await refused.json()) as { code: string; detail: string };
    expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
    expect(problem.detail).toContain("amount_too_small");
    expect(
      target.logs.entries.find((entry) => entry.msg === "stripe did not create the payment intent"),
    ).toMatchObject({ level: "warn", kind: "refused" });
    // Still locked: the claim waits to be given back.
    expect(claimOf()).toEqual({ state: "pending" });
    other.run("COMMIT");
    // Given back within a few retries of the lock going, with no request asking.
    const deadline = Date.now() + 3000;
    while (claimOf() !== null && Date.now() < deadline) await Bun.sleep(50);
    expect(claimOf()).toBeNull();
  } finally {
    if (other.inTransaction) other.run("ROLLBACK");
    other.close();
  }
  target.stripe.delayMs = 0;
  const started = performance.now();
  const retried = await createIntent(target, bearer(user.accessToken), body, "refused-locked");
  expect(retried.status).toBe(201);
  expect(retried.headers.get("idempotent-replayed")).toBeNull();
  expect(performance.now() - started).toBeLessThan(1000);
  expect(intentCalls(target)).toBe(2);
});

test("a stop while a refused intent's claim waits for another connection's lock gives it back once the lock goes, before the database closes (probe 44b F1)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const user = await signUp(target);
  target.stripe.delayMs = 300;
  target.stripe.failNext(INTENTS, { status: 400, code: "amount_too_small", shouldRetry: false });
  const answered = createIntent(target, bearer(user.accessToken), body, "stopped-locked");
  const other = new Database(target.databasePath);
  const claimOf = () =>
    other
      .query("SELECT state FROM payment_idempotency_keys WHERE key = ?")
      .get("stopped-locked") as { state: string } | null;
  try {
    await Bun.sleep(100);
    other.run("BEGIN IMMEDIATE");
    expect((await answered).status).toBe(502);
    let stopped = false;
    const stopping = target.services.stop().then(() => {
      stopped = true;
    });
    await Bun.sleep(500);
    // The stop waits for the lock rather than drop the give-back.
    expect(stopped).toBe(false);
    expect(claimOf()).toEqual({ state: "pending" });
    other.run("COMMIT");
    await stopping;
    expect(claimOf()).toBeNull();
  } finally {
    if (other.inTransaction) other.run("ROLLBACK");
    other.close();
  }
});

test("keys are kept 24 hours: until then a reuse is refused here; after, the maintenance forgets it and Stripe decides", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock });
  const user = await signUp(current);
  // An API key: the session's access token would expire over the hours this test moves.
  const key = { "x-api-key": createKey(current, ["payments"], user.userId).key };
  expect((await createIntent(current, key, body, "day-old")).status).toBe(201);
  clock.advance(23 * 60 * 60 * 1000);
  current.services.runMaintenance();
  const within = await createIntent(current, key, { ...body, amount: 51 }, "day-old");
  expect(within.status).toBe(409);
  clock.advance(2 * 60 * 60 * 1000);
  current.services.runMaintenance();
  const after = await createIntent(current, key, { ...body, amount: 51 }, "day-old");
  // Forgotten here, so Stripe is asked; this one still holds its key and refuses other parameters.
  expect(intentCalls(current)).toBe(2);
  expect(after.status).toBe(502);
  expect(((await after.json()) as { detail: string }).detail).toContain("idempotency_key_in_use");
});

test("over HTTP, a request still waiting past its wait on another with its key is 409 CONFLICT with Retry-After", async () => {
  current = buildPaymentsApp();
  current.stripe.delayMs = 1_000;
  const user = await signUp(current);
  // Another process on the same file whose requests wait only 100 ms for one another.
  const logger = createLogger({ level: "info", destination: new LogCapture() });
  const services = createServices({
    config: current.config,
    db: current.db,
    logger,
    passwordHashing: TEST_PASSWORD_HASHING,
    maintenanceIntervalMs: 0,
    payments: { inProgressWaitMs: 100 },
  });
  const impatient = { app: createApp({ ...services, peerAddress: () => "10.4.4.4" }) };
  try {
    const first = createIntent(current, bearer(user.accessToken), body, "slow-http");
    await Bun.sleep(100);
    const second = await createIntent(impatient, bearer(user.accessToken), body, "slow-http");
    expect(second.status).toBe(409);
    expect(second.headers.get("retry-after")).toBe("1");
    const problem = (await second.json()) as { code: string; detail: string };
    expect(problem.code).toBe("CONFLICT");
    expect(problem.detail).toContain("in progress");
    expect((await first).status).toBe(201);
    // Once the first is done, the same request replays its result there too.
    const later = await createIntent(impatient, bearer(user.accessToken), body, "slow-http");
    expect(later.status).toBe(201);
    expect(later.headers.get("idempotent-replayed")).toBe("true");
    expect(intentCalls(current)).toBe(1);
  } finally {
    services.close();
  }
});
