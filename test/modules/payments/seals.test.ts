/**
 * What someone who can write the database file, but does not hold AUDIT_SECRET_KEY, can do with
 * the payments ledger (probe 14a F4): a payment changed or inserted there is absent to its owner,
 * its lists, refunds and Stripe's events; a stored Idempotency-Key result planted there is never
 * replayed; each is reported once as `payment.tampered`. Every change Palisade makes reseals, and
 * the upgrade seals what an older release stored.
 */
import type { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { applyMigrationsFrom } from "../../../src/db/migrate-from-folder";
import {
  createPaymentSeal,
  PAYMENT_SEALS_MIGRATION,
  paymentSealing,
  SEALED_PAYMENT_COLUMNS,
} from "../../../src/modules/payments/seal";
import { requestHash } from "../../../src/modules/payments/service";
import { upgradeSealing } from "../../../src/upgrade-sealing";
import { send, tempDir } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { cleanupsAfterEach } from "../../support/cleanups";
import { cliInProcess } from "../../support/cli";
import { migrationsUpTo, migrationTagsFrom, putBackBefore } from "../../support/migrations";
import {
  auditRows,
  buildPaymentsApp,
  createIntent,
  deliver,
  metricValue,
  type PaymentsApp,
  paidPayment,
  pay,
  stripeEvent,
  succeed,
} from "../../support/payments";
import { runToExit, startService } from "../../support/process";

const cleanups = cleanupsAfterEach();

function app(): PaymentsApp {
  const target = buildPaymentsApp();
  cleanups.push(() => target.close());
  return target;
}

/** An app with a user's succeeded payment and an admin. */
async function paidApp() {
  const target = app();
  return { target, ...(await paidPayment(target)) };
}

const seal = (target: PaymentsApp) => createPaymentSeal(target.config.audit.secretKey);

/** Whether every payments and idempotency row of the file matches its seal. */
function everyRowSealed(target: PaymentsApp): boolean {
  const sealer = seal(target);
  const sqlite = target.db.$client;
  const payments = sqlite
    .query(`SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments`)
    .all() as Parameters<typeof sealer.intact.payment>[0][];
  const keys = sqlite
    .query(
      `SELECT owner, key, request_hash AS requestHash, state, response, seal
       FROM payment_idempotency_keys`,
    )
    .all() as Parameters<typeof sealer.intact.idempotencyKey>[0][];
  return (
    payments.every((row) => sealer.intact.payment(row)) &&
    keys.every((row) => sealer.intact.idempotencyKey(row))
  );
}

/**
 * A paid app whose file a test changes through connections of its own (the app's keeps the schema
 * it read before another connection added a column back), and the environment of a start or
 * command on it.
 */
async function paidFile() {
  const { target, id } = await paidApp();
  target.services.audit.flush();
  const sqlite = {
    run: (sql: string, params: unknown[] = []) =>
      withFile(target, (file) => file.run(sql, params as never)),
  };
  const env = {
    DATABASE_PATH: target.databasePath,
    AUDIT_SECRET_KEY: target.config.audit.secretKey,
    APP_ENV: "development",
    PORT: "0",
  };
  const applied = () =>
    withFile(
      target,
      (file) =>
        file.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()!.n,
    );
  return { target, id, sqlite, env, applied };
}

/** `use` on a connection of its own to `target`'s file, closed after. */
function withFile<T>(target: PaymentsApp, use: (file: Database) => T): T {
  const file = openDatabase(target.databasePath);
  try {
    return use(file.$client);
  } finally {
    file.$client.close();
  }
}

/** The details of the audit events of `type` in the file at `path`, oldest first. */
function eventDetails(path: string, type: string) {
  const file = openDatabase(path);
  try {
    return file.$client
      .query<{ detail: string }, [string]>(
        "SELECT detail FROM audit_events WHERE type = ? ORDER BY id",
      )
      .all(type)
      .map((row) => JSON.parse(row.detail));
  } finally {
    file.$client.close();
  }
}

function tamperReports(target: PaymentsApp) {
  return auditRows(target, "payment.tampered").map((row) => JSON.parse(row.detail as string));
}

describe("payments written into the file", () => {
  test("an unpaid intent made 'succeeded' in the file: 404 to its owner, left out of the list, never refunded, reported once", async () => {
    const target = app();
    const alice = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    const id = await pay(target, alice, 3000);
    const paid = await pay(target, alice, 1500);
    await succeed(target, paid);
    target.db.$client.run("UPDATE payments SET status = 'succeeded' WHERE id = ?", [id]);

    const read = await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) });
    expect(read.status).toBe(404);
    const list = (await (
      await send(target, "/api/payments", { headers: bearer(alice.accessToken) })
    ).json()) as { payments: { id: string; status: string }[] };
    expect(list.payments).toEqual([expect.objectContaining({ id: paid, status: "succeeded" })]);
    const refund = await send(target, `/api/admin/payments/${id}/refund`, {
      headers: bearer(admin.accessToken),
      body: {},
    });
    expect(refund.status).toBe(404);
    expect(target.stripe.calls.filter((call) => call.path === "/v1/refunds")).toHaveLength(0);
    const exported = (await (
      await send(target, "/api/me/export", { headers: bearer(alice.accessToken) })
    ).json()) as { payments: { id: string }[] };
    expect(exported.payments.map((p) => p.id)).toEqual([paid]);
    // Read five times, reported once; never a column's value.
    expect(tamperReports(target)).toEqual([{ table: "payments", id }]);
  });

  test("a payment inserted into the file is nobody's: not listed, not readable, its events ignored", async () => {
    const target = app();
    const alice = await signUp(target);
    const forged = "pi_FORGEDforgedFORGED01";
    target.db.$client.run(
      `INSERT INTO payments (id, owner, amount, currency, status, client_secret, created_at, updated_at)
       VALUES (?, ?, 99900, 'usd', 'succeeded', 'x', 1, 1)`,
      [forged, `user:${alice.userId}`],
    );
    const list = (await (
      await send(target, "/api/payments", { headers: bearer(alice.accessToken) })
    ).json()) as { payments: unknown[] };
    expect(list.payments).toEqual([]);
    expect(
      (await send(target, `/api/payments/${forged}`, { headers: bearer(alice.accessToken) }))
        .status,
    ).toBe(404);
    const event = await deliver(
      target,
      stripeEvent("payment_intent.canceled", { id: forged, object: "payment_intent" }),
    );
    expect(event.status).toBe(200);
    expect(((await event.json()) as { outcome: string }).outcome).toBe("ignored");
    expect(
      target.db.$client.query("SELECT status, seal FROM payments WHERE id = ?").get(forged),
    ).toEqual({ status: "succeeded", seal: null });
  });

  test("an amount changed in the file: Stripe's events for it are ignored and Palisade never reseals it", async () => {
    const target = app();
    const alice = await signUp(target);
    const id = await pay(target, alice, 3000);
    target.db.$client.run("UPDATE payments SET amount = 1 WHERE id = ?", [id]);
    await succeed(target, id);
    const row = target.db.$client.query("SELECT status FROM payments WHERE id = ?").get(id);
    expect(row).toEqual({ status: "requires_payment_method" });
    expect(everyRowSealed(target)).toBe(false);
    // Put back as it was, it is the payment again.
    target.db.$client.run("UPDATE payments SET amount = 3000 WHERE id = ?", [id]);
    await succeed(target, id, Math.floor(Date.now() / 1000) + 1);
    const read = await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) });
    expect(((await read.json()) as { status: string }).status).toBe("succeeded");
  });

  test("a stored Idempotency-Key result planted in the file is never replayed: the key is claimed again and Stripe answers", async () => {
    const target = app();
    const alice = await signUp(target);
    const body = { amount: 1500, currency: "usd" };
    const planted = {
      id: "pi_ATTACKERattacker01",
      clientSecret: "pi_ATTACKERattacker01_secret_evil",
      status: "requires_payment_method",
      amount: 1500,
      currency: "usd",
    };
    target.db.$client.run(
      `INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at, response)
       VALUES (?, 'order-42', ?, 'done', ?, ?)`,
      [`user:${alice.userId}`, requestHash(body), Date.now(), JSON.stringify(planted)],
    );
    const response = await createIntent(target, bearer(alice.accessToken), body, "order-42");
    expect(response.status).toBe(201);
    expect(response.headers.get("idempotent-replayed")).toBeNull();
    const created = (await response.json()) as { id: string; clientSecret: string };
    expect(created.id).not.toBe(planted.id);
    expect(created.clientSecret).not.toContain("evil");
    expect(target.stripe.calls.filter((call) => call.path === "/v1/payment_intents")).toHaveLength(
      1,
    );
    const [report] = tamperReports(target);
    expect(report).toEqual({
      table: "payment_idempotency_keys",
      id: `user:${alice.userId}`,
      key: expect.stringMatching(/^[0-9a-f]{16}$/),
    });
    // The key is Palisade's now: the same request replays what Stripe made.
    const again = await createIntent(target, bearer(alice.accessToken), body, "order-42");
    expect(((await again.json()) as { id: string }).id).toBe(created.id);
    expect(everyRowSealed(target)).toBe(true);
  });
});

describe("idempotency keys lost or forged (probe 26a F2, F3)", () => {
  test("each forged key of one owner is reported, by a hash of the key, never the key", async () => {
    const target = app();
    const alice = await signUp(target);
    const body = { amount: 1500, currency: "usd" };
    for (const key of ["order-1", "order-2", "order-3"]) {
      target.db.$client.run(
        `INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at, response)
         VALUES (?, ?, ?, 'done', ?, '{}')`,
        [`user:${alice.userId}`, key, requestHash(body), Date.now()],
      );
      const response = await createIntent(target, bearer(alice.accessToken), body, key);
      expect(response.status).toBe(201);
    }
    const reports = tamperReports(target);
    expect(reports).toHaveLength(3);
    expect(new Set(reports.map((report) => report.key)).size).toBe(3);
    expect(JSON.stringify(reports)).not.toContain("order-");
  });

  test("a key whose stored result was lost replays Stripe's intent: counted and audited once, marked replayed", async () => {
    const target = app();
    const alice = await signUp(target);
    const body = { amount: 2500, currency: "usd" };
    const first = await createIntent(target, bearer(alice.accessToken), body, "order-9");
    expect(first.status).toBe(201);
    const { id } = (await first.json()) as { id: string };
    const counted = () =>
      metricValue(target, "payments_total", { status: "requires_payment_method" });
    expect(await counted()).toBe(1);
    target.db.$client.run("DELETE FROM payment_idempotency_keys WHERE key = 'order-9'");
    const again = await createIntent(target, bearer(alice.accessToken), body, "order-9");
    expect(again.status).toBe(201);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(((await again.json()) as { id: string }).id).toBe(id);
    expect(await counted()).toBe(1);
    target.services.audit.flush();
    expect(auditRows(target, "payment.intent.created")).toHaveLength(1);
    expect(
      target.db.$client.query("SELECT count(*) AS n FROM payments WHERE id = ?").get(id),
    ).toEqual({ n: 1 });
  });
});

describe("a row changed in the file while a refund is with Stripe", () => {
  test("the refund made is answered 200 and audited, the row is not trusted with it, and its claim ends", async () => {
    const { target, admin, id } = await paidApp();
    target.stripe.delayMs = 300;
    const answered = send(target, `/api/admin/payments/${id}/refund`, {
      headers: bearer(admin.accessToken),
      body: { amount: 500 },
    });
    await Bun.sleep(100);
    target.db.$client.run("UPDATE payments SET amount = 3001 WHERE id = ?", [id]);
    const response = await answered;
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      refund: { id: string; amount: number };
      payment: { amountRefunded: number };
    };
    expect(body.refund.amount).toBe(500);
    expect(body.payment.amountRefunded).toBe(500);
    expect(
      target.db.$client
        .query(
          "SELECT amount_refunded AS refunded, refund_started_at AS claim FROM payments WHERE id = ?",
        )
        .get(id),
    ).toEqual({ refunded: 0, claim: null });
    const line = target.logs.entries.find((entry) =>
      String(entry.msg).startsWith("refund made by Stripe; the payment's row fails its seal"),
    );
    expect(line).toMatchObject({ paymentId: id, refundId: body.refund.id, amount: 500 });
    const audited = auditRows(target, "payment.refund").map((row) =>
      JSON.parse(row.detail as string),
    );
    expect(audited).toEqual([expect.objectContaining({ paymentId: id, refundId: body.refund.id })]);
    expect(tamperReports(target)).toEqual([{ table: "payments", id }]);
  });
});

describe("what a payment says besides its amount", () => {
  test("garbage in the time of the event that set the status: a full refund and Stripe's events answer, never 500", async () => {
    const { target, admin, id } = await paidApp();
    target.db.$client.run("UPDATE payments SET status_event_at = 'x' WHERE id = ?", [id]);
    const refund = await send(target, `/api/admin/payments/${id}/refund`, {
      headers: bearer(admin.accessToken),
      body: {},
    });
    expect(refund.status).toBe(404);
    const event = await deliver(
      target,
      stripeEvent("charge.refunded", {
        id: "ch_garbage1",
        object: "charge",
        payment_intent: id,
        amount_refunded: 3000,
      }),
    );
    expect(event.status).toBe(200);
    expect(((await event.json()) as { outcome: string }).outcome).toBe("ignored");
    expect(tamperReports(target)).toEqual([{ table: "payments", id }]);
  });

  test("an order reference moved onto another paid payment (metadata, description, email) makes that payment absent", async () => {
    const target = app();
    const alice = await signUp(target);
    const cheap = await createIntent(target, bearer(alice.accessToken), {
      amount: 100,
      currency: "usd",
      metadata: { order: "cheap-1" },
    });
    const cheapId = ((await cheap.json()) as { id: string }).id;
    await succeed(target, cheapId);
    for (const [column, value] of [
      ["metadata", '{"order":"expensive-9"}'],
      ["description", "Expensive order 9"],
      ["customer_email", "victim@example.test"],
      ["created_at", "x"],
      ["status_event_at", "x"],
      // Infinity (SQLite keeps `9e999` so), which JSON would write as the null Palisade sealed.
      ["disputed_at", Number.POSITIVE_INFINITY],
    ] as const) {
      const before = target.db.$client
        .query(`SELECT ${column} AS v FROM payments WHERE id = ?`)
        .get(cheapId) as {
        v: unknown;
      };
      target.db.$client.run(`UPDATE payments SET ${column} = ? WHERE id = ?`, [value, cheapId]);
      const read = await send(target, `/api/payments/${cheapId}`, {
        headers: bearer(alice.accessToken),
      });
      expect(read.status).toBe(404);
      const list = await send(target, "/api/payments", { headers: bearer(alice.accessToken) });
      expect(list.status).toBe(200);
      expect(((await list.json()) as { payments: unknown[] }).payments).toEqual([]);
      target.db.$client.run(`UPDATE payments SET ${column} = ? WHERE id = ?`, [
        before.v as string,
        cheapId,
      ]);
    }
    const restored = await send(target, `/api/payments/${cheapId}`, {
      headers: bearer(alice.accessToken),
    });
    expect(((await restored.json()) as { metadata: unknown }).metadata).toEqual({
      order: "cheap-1",
    });
  });

  test("a forged row read by both the payments routes and Stripe's webhook is reported once", async () => {
    const target = app();
    const alice = await signUp(target);
    const id = await pay(target, alice, 3000);
    target.db.$client.run("UPDATE payments SET status = 'succeeded' WHERE id = ?", [id]);
    await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) });
    await deliver(target, stripeEvent("payment_intent.canceled", { id, object: "payment_intent" }));
    await send(target, "/api/payments", { headers: bearer(alice.accessToken) });
    expect(tamperReports(target)).toEqual([{ table: "payments", id }]);
  });
});

describe("Palisade reseals what it changes", () => {
  test("after an intent, its success, a partial refund, a dispute, the rest refunded and an erasure, every row matches its seal", async () => {
    const target = app();
    const alice = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    const id = await pay(target, alice, 3000);
    expect(everyRowSealed(target)).toBe(true);
    await succeed(target, id);
    const refund = (body: unknown) =>
      send(target, `/api/admin/payments/${id}/refund`, {
        headers: bearer(admin.accessToken),
        body,
      });
    expect((await refund({ amount: 1000 })).status).toBe(200);
    const dispute = await deliver(
      target,
      stripeEvent("charge.dispute.created", {
        id: "dp_sealed1",
        object: "dispute",
        charge: "ch_sealed1",
        payment_intent: id,
        amount: 2000,
        reason: "fraudulent",
      }),
    );
    expect(dispute.status).toBe(200);
    expect((await refund({})).status).toBe(200);
    expect(everyRowSealed(target)).toBe(true);
    const read = (await (
      await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) })
    ).json()) as { status: string; amountRefunded: number; disputed: boolean };
    expect(read).toMatchObject({ status: "refunded", amountRefunded: 3000, disputed: true });

    const erased = await send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(alice.accessToken),
    });
    expect(erased.status).toBe(204);
    expect(everyRowSealed(target)).toBe(true);
    expect(
      target.db.$client.query("SELECT owner LIKE 'erased:%' AS pseudonymous FROM payments").get(),
    ).toEqual({ pseudonymous: 1 });
    expect(tamperReports(target)).toEqual([]);
  });
});

function databaseBeforePaymentSeals() {
  const dir = tempDir();
  cleanups.push(dir.remove);
  const path = `${dir.path}/old.db`;
  const db = openDatabase(path);
  applyMigrationsFrom(db, migrationsUpTo(dir.path, 16));
  db.$client.run(
    `INSERT INTO payments (id, owner, amount, currency, status, amount_refunded, client_secret, created_at, updated_at)
     VALUES ('pi_Old0000000000000001', 'user:old', 2500, 'eur', 'succeeded', 500, 'pi_Old0000000000000001_secret_x', 1, 1)`,
  );
  db.$client.run(
    `INSERT INTO payment_idempotency_keys (owner, key, request_hash, state, claimed_at, response)
     VALUES ('user:old', 'k1', 'h', 'done', 1, '{"id":"pi_Old0000000000000001"}')`,
  );
  return { path, db };
}

describe("upgrading a database stored before payment seals", () => {
  test("the migration seals the payments and keys there, in its transaction; only it does", () => {
    const { db } = databaseBeforePaymentSeals();
    cleanups.push(() => db.$client.close());
    const sealer = createPaymentSeal("a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC");
    const sealing = paymentSealing(sealer);
    const applied = applyMigrations(db, sealing.companions).appliedNow;
    expect(applied).toEqual(migrationTagsFrom(17));
    expect(applied[0]).toBe(PAYMENT_SEALS_MIGRATION);
    expect(sealing.sealed()).toEqual({ payments: 1, idempotencyKeys: 1 });
    const row = db.$client
      .query(`SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments`)
      .get() as Parameters<typeof sealer.intact.payment>[0];
    expect(sealer.intact.payment(row)).toBe(true);
    db.$client.run(
      `INSERT INTO payments (id, owner, amount, currency, status, created_at, updated_at)
       VALUES ('pi_Later000000000000001', 'user:old', 1, 'usd', 'succeeded', 2, 2)`,
    );
    const later = paymentSealing(sealer);
    expect(applyMigrations(db, later.companions).appliedNow).toEqual([]);
    expect(later.sealed()).toBeNull();
    expect(db.$client.query("SELECT id FROM payments WHERE seal IS NULL").all()).toEqual([
      { id: "pi_Later000000000000001" },
    ]);
  });

  test("payments whose seq the file put past 2^53 are each sealed as themselves (53a F2's class)", () => {
    const { db } = databaseBeforePaymentSeals();
    cleanups.push(() => db.$client.close());
    // A second payment at 2^53, and the first moved to 2^53 + 1, which JavaScript reads as 2^53.
    db.$client.run(
      `INSERT INTO payments (seq, id, owner, amount, currency, status, created_at, updated_at)
       VALUES (9007199254740992, 'pi_Old0000000000000002', 'user:old', 900, 'eur', 'succeeded', 1, 1)`,
    );
    db.$client.run(
      "UPDATE payments SET seq = 9007199254740993 WHERE id = 'pi_Old0000000000000001'",
    );
    const sealer = createPaymentSeal("a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC");
    applyMigrations(db, paymentSealing(sealer).companions);
    const rows = db.$client
      .query(`SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments ORDER BY id`)
      .all() as Parameters<typeof sealer.intact.payment>[0][];
    expect(rows.map((row) => sealer.intact.payment(row))).toEqual([true, true]);
  });

  test("db:migrate says and audits it; a file put back into its pre-0017 shape is sealed, said and audited again", async () => {
    const { path, db } = databaseBeforePaymentSeals();
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC" };
    const first = await cliInProcess(["db:migrate"], env);
    expect(first.code).toBe(0);
    expect(first.stderr).toBe(
      "sealed the 1 payments (and 1 idempotency keys) stored before this release; payments rows written into the file from now on are treated as absent",
    );
    expect((await cliInProcess(["db:migrate"], env)).stderr).toBe("");
    const file = openDatabase(path);
    const sealedEvents = () =>
      file.$client
        .query("SELECT actor, detail FROM audit_events WHERE type = 'payment.ledger_sealed'")
        .all();
    expect(sealedEvents()).toEqual([
      { actor: "system", detail: JSON.stringify({ idempotencyKeys: 1, payments: 1 }) },
    ]);
    putBackBefore(file.$client, 17);
    file.$client.close();
    const again = await cliInProcess(["db:migrate"], env);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("sealed the 1 payments");
    // The file's audit log holds the first sealing: this second one is said as tampering.
    expect(again.stderr).toContain(
      "the database file was sealed by this release before (1 earlier payment.ledger_sealed in its audit log)",
    );
    const reopened = openDatabase(path);
    cleanups.push(() => reopened.$client.close());
    expect(
      reopened.$client
        .query("SELECT count(*) AS n FROM audit_events WHERE type = 'payment.ledger_sealed'")
        .get(),
    ).toEqual({ n: 2 });
    const resealed = reopened.$client
      .query<{ detail: string }, []>("SELECT detail FROM audit_events WHERE type = 'db.resealed'")
      .all();
    // The blocks' sealing (0021, after 0017) ran again too; it had sealed none, but was recorded.
    expect(resealed.map((row) => JSON.parse(row.detail))).toEqual([
      { kind: "payment.ledger_sealed", earlier: 1, payments: 1, idempotencyKeys: 1 },
      { kind: "ip.blocks_sealed", earlier: 1, blocks: 0 },
      { kind: "auth.lineages_sealed", earlier: 1, keys: 0, rotated: 0 },
      { kind: "auth.successors_sealed", earlier: 1, keys: 0, rotated: 0, actingForUsers: 0 },
      { kind: "payment.undecided_sealed", earlier: 1, payments: 0 },
      { kind: "whatsapp.outbox_offsets_sealed", earlier: 1, replies: 0 },
    ]);
    file.$client.close();
  });

  test("a reading command on a log with keyed rows records the sealing it ran, with nothing sealed too, so a second run is seen (probe 62a F1); on a new log it writes no row, the start pins the key (63a F4) and records what it ran late (64 F2)", async () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const path = `${dir.path}/at-0027.db`;
    const db = openDatabase(path);
    applyMigrationsFrom(db, migrationsUpTo(dir.path, 27));
    db.$client.close();
    const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC" };
    const events = (type: string) => eventDetails(path, type);
    const read = () => cliInProcess(["payments:undecided", "pi_NotThere0123456789"], env);
    await read();
    expect(events("payment.undecided_sealed")).toEqual([]);
    expect(events("audit.chain.keyed")).toEqual([]);
    // The service starts on it, keys the log and records the sealings the command ran; put back
    // before 0028, the next run of that sealing is said as tampering.
    const service = await startService(env);
    await service.stop();
    expect(service.stdout()).toContain(
      "the audit log holds no event of the sealings of 0013_credential_seals, 0014_outbox_seals,",
    );
    expect(events("payment.undecided_sealed")).toEqual([
      { migration: "0028_refund_undecided_seals", recordedLate: true },
    ]);
    expect(events("whatsapp.outbox_offsets_sealed")).toEqual([
      { migration: "0029_outbox_reply_offsets", recordedLate: true },
    ]);
    // A second start has nothing left to record.
    const again = await startService(env);
    await again.stop();
    expect(again.stdout()).not.toContain("holds no event of the sealings");
    expect(events("payment.undecided_sealed")).toHaveLength(1);
    const file = openDatabase(path);
    putBackBefore(file.$client, 28);
    file.$client.close();
    const rerun = await read();
    expect(rerun.stderr).toContain(
      "the database file was sealed by this release before (1 earlier payment.undecided_sealed in its audit log)",
    );
    expect(events("db.resealed")).toContainEqual({
      kind: "payment.undecided_sealed",
      earlier: 1,
      payments: 0,
    });
  });

  test("a start or a command the schema guard refuses migrates and seals nothing: the file stays as it was, and the sealing of the start after it is told as a second one (probe 66 F3, 65 F5, 63a F2)", async () => {
    const { target, id, sqlite, env, applied } = await paidFile();
    const details = (type: string) => eventDetails(target.databasePath, type);
    withFile(target, (file) => putBackBefore(file, 28));
    expect((await cliInProcess(["payments:undecided", id], env)).code).toBe(0);
    expect(details("payment.undecided_sealed")).toEqual([{ payments: 0 }]);

    withFile(target, (file) => putBackBefore(file, 28));
    sqlite.run("CREATE INDEX planted ON audit_events (outcome)");
    const pending = applied();
    const start = await runToExit(["bun", "run", "src/index.ts"], env);
    expect(start.code).toBe(2);
    expect(start.stderr + start.stdout).toContain("schema was changed");
    expect(start.stderr + start.stdout).not.toContain("sealed by this release before");
    const command = await cliInProcess(["payments:undecided", id], env);
    expect(command.code).toBe(1);
    expect(command.stderr).toContain("schema was changed");
    // Neither migrated nor sealed: the file is as the put-back left it.
    expect(applied()).toBe(pending);
    expect(details("payment.undecided_sealed")).toEqual([{ payments: 0 }]);
    expect(details("db.resealed")).toEqual([]);

    sqlite.run("DROP INDEX planted");
    const service = await startService(env);
    await service.stop();
    expect(details("db.resealed")).toContainEqual({
      kind: "payment.undecided_sealed",
      earlier: 1,
      payments: 0,
    });
    expect((await cliInProcess(["audit:verify"], env)).code).toBe(0);
  });

  test("an earlier sealing's event whose type was changed in the file while the sealing ran again, and changed back after, is told all the same: the log did not verify then (probe 66 F1)", async () => {
    const { target, id, sqlite, env } = await paidFile();
    withFile(target, (file) => putBackBefore(file, 28));
    await cliInProcess(["payments:undecided", id], env);
    const first = withFile(
      target,
      (file) =>
        file
          .query<{ id: number }, []>(
            "SELECT id FROM audit_events WHERE type = 'payment.undecided_sealed'",
          )
          .get()!.id,
    );
    withFile(target, (file) => putBackBefore(file, 28));
    sqlite.run("UPDATE audit_events SET type = 'auth.logout' WHERE id = ?", [first]);
    const rerun = await cliInProcess(["payments:undecided", id], env);
    sqlite.run("UPDATE audit_events SET type = 'payment.undecided_sealed' WHERE id = ?", [first]);
    expect(rerun.stderr).toContain(
      "the database file's audit log did not verify as this release sealed it (chain broken at row",
    );
    expect(eventDetails(target.databasePath, "db.resealed")).toContainEqual({
      kind: "payment.undecided_sealed",
      earlier: 0,
      chain: "broken",
      payments: 0,
    });
  });

  test("the sealings and db.resealed commit with the migrations: nothing a process does after the commit can lose them, and a file that refuses them is not migrated (probe 67)", async () => {
    const { target, id, env, applied } = await paidFile();
    const key = target.config.audit.secretKey;
    withFile(target, (file) => putBackBefore(file, 28));
    expect((await cliInProcess(["payments:undecided", id], env)).code).toBe(0);

    // F2: a process killed right after the commit, before its services exist: the migration
    // alone, as src/index.ts runs it, has left the events in the log.
    withFile(target, (file) => putBackBefore(file, 28));
    const file = openDatabase(target.databasePath);
    const sealing = upgradeSealing(key);
    applyMigrations(
      file,
      sealing.companions,
      () => sealing.beforeMigrating(file.$client),
      () => sealing.recordInMigration(file.$client, target.logger),
    );
    file.$client.close();
    expect(eventDetails(target.databasePath, "db.resealed")).toContainEqual({
      kind: "payment.undecided_sealed",
      earlier: 1,
      payments: 0,
    });

    // F1: the audit log's id sequence set near its end, so no row can be written: the start
    // refuses in one line and leaves the file unmigrated.
    withFile(target, (file) => {
      putBackBefore(file, 28);
      file.run("UPDATE sqlite_sequence SET seq = 9007199254740990 WHERE name = 'audit_events'");
    });
    const pending = applied();
    const refused = await runToExit(["bun", "run", "src/index.ts"], env);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("migrations failed");
    expect(refused.stderr).not.toContain("    at ");
    expect(applied()).toBe(pending);
  });

  describe("a list the release before wrote, on a file put back before 0028 (probe 63a)", () => {
    /** A paid app whose payment holds a list as the release before wrote it, put back before 0028. */
    async function beforeUndecidedSeals() {
      const { target, id } = await paidApp();
      target.services.audit.flush();
      const entries = JSON.stringify([
        { key: `palisade_refund_${id}_0_1000`, amount: 1000, before: 0 },
      ]);
      const sqlite = target.db.$client;
      sqlite.run("UPDATE payments SET refund_undecided = ? WHERE id = ?", [
        JSON.stringify({
          entries: JSON.parse(entries),
          seal: seal(target).undecidedRefunds(id, entries),
        }),
        id,
      ]);
      putBackBefore(sqlite, 28);
      const env = {
        DATABASE_PATH: target.databasePath,
        AUDIT_SECRET_KEY: target.config.audit.secretKey,
      };
      return { target, env };
    }
    const sealedEvents = (target: PaymentsApp) => auditRows(target, "payment.undecided_sealed");

    test("a command or a start with another AUDIT_SECRET_KEY is refused before it migrates: the upgrade then seals with the service's key (F3)", async () => {
      const { target, env } = await beforeUndecidedSeals();
      const other = { ...env, AUDIT_SECRET_KEY: "b8R3xF0yU2iP7oL4kJ9hG6fD1sZxCvBn" };
      const refused = await cliInProcess(["users:list"], other);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toStartWith("palisade users:list: AUDIT_SECRET_KEY is not the key");
      const start = await runToExit(["bun", "run", "src/index.ts"], {
        ...other,
        APP_ENV: "development",
        PORT: "0",
      });
      expect(start.code).not.toBe(0);
      expect(start.stderr + start.stdout).toContain(
        "refusing to start: AUDIT_SECRET_KEY is not the key",
      );
      const upgraded = await cliInProcess(["users:list"], env);
      expect(upgraded.code).toBe(0);
      expect(upgraded.stderr).toContain("sealed the undecided refunds of the 1 payments");
      expect(sealedEvents(target)).toHaveLength(1);
    });

    test("one unkeyed audit row planted beside keyed ones does not keep a reading command from recording the sealing it ran (F1)", async () => {
      const { target, env } = await beforeUndecidedSeals();
      target.db.$client.run("UPDATE payments SET refund_undecided = NULL");
      const columns = target.db.$client
        .query<{ name: string }, []>("SELECT name FROM pragma_table_info('audit_events')")
        .all()
        .map((column) => `"${column.name}"`)
        .filter((name) => name !== '"id"' && name !== '"key_id"')
        .join(", ");
      target.db.$client.run(
        `INSERT INTO audit_events (id, key_id, ${columns})
         SELECT 0, NULL, ${columns} FROM audit_events LIMIT 1`,
      );
      await cliInProcess(["users:list"], env);
      expect(sealedEvents(target).map((row) => JSON.parse(row.detail))).toEqual([{ payments: 0 }]);
    });
  });
});

describe("an Idempotency-Key whose payment is not on record as it was made (probe 89e F2)", () => {
  test("is not replayed once its payment row is changed or deleted in the file: 409, no client secret, reported", async () => {
    for (const change of [
      "UPDATE payments SET status = 'succeeded' WHERE id = ?",
      "DELETE FROM payments WHERE id = ?",
    ]) {
      const target = app();
      const user = await signUp(target);
      const body = { amount: 2500, currency: "usd" };
      const made = await createIntent(target, bearer(user.accessToken), body, "order-42");
      expect(made.status).toBe(201);
      const { id } = (await made.json()) as { id: string };
      const replayed = await createIntent(target, bearer(user.accessToken), body, "order-42");
      expect(replayed.status).toBe(201);
      expect(replayed.headers.get("idempotent-replayed")).toBe("true");
      target.db.$client.run(change, [id]);
      const again = await createIntent(target, bearer(user.accessToken), body, "order-42");
      expect(again.status).toBe(409);
      const text = await again.text();
      expect(JSON.parse(text).code).toBe("CONFLICT");
      expect(text).not.toContain("secret");
      expect(auditRows(target, "payment.tampered").length).toBeGreaterThanOrEqual(1);
    }
  });
});
