/**
 * What a turn reserved outlives neither its process nor its failure: a process killed mid-turn (a
 * real SIGKILL of `src/index.ts`) has its turn's reservation given back by another process's
 * maintenance a minute later, so the owner's day admits again; a process that keeps running keeps
 * its turns however long they take; a process stalled past the minute finds its turn given back
 * and settles it without taking the reservations admitted since; each gone turn is given back once
 * however many processes run the maintenance; a turn whose storing fails is still charged, and one
 * whose settle was rolled back is given back by its own process's next maintenance run.
 */
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { chatHolders, chatReservations, chatUsage } from "../../../src/db/schema";
import { ChatBudget, utcDay } from "../../../src/modules/chat/budget";
import type { ChatFeature } from "../../../src/modules/chat/feature";
import { loadFaq } from "../../../src/modules/chat/providers/faq";
import { createOfflineProvider } from "../../../src/modules/chat/providers/offline";
import { HOLDER_GONE_AFTER_MS } from "../../../src/modules/chat/reservations";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "../../support/app";
import { type Session, signUp } from "../../support/auth";
import { asUser, chat, gatedProvider } from "../../support/chat";
import { ManualClock } from "../../support/clock";
import { anotherInstance, type Instance } from "../../support/instance";
import { startOpenAiServer } from "../../support/openai-server";
import { startService } from "../../support/process";
import { waitFor } from "../../support/wait";

// 40 characters: 10 tokens; "zzz yyyyyy": 3. A new conversation's turn is estimated at 13.
const SYSTEM_PROMPT = "S".repeat(40);
const MESSAGE = "zzz yyyyyy";
const ESTIMATE = 13;
/** The offline provider's completion cap; the OpenAI-compatible child is given the same. */
const MAX_COMPLETION = createOfflineProvider(loadFaq(null)).maxCompletionTokens;
const RESERVED = ESTIMATE + MAX_COMPLETION;

/** Room for `turns` reservations and not one more. */
function envFor(turns: number) {
  return {
    CHAT_SYSTEM_PROMPT: SYSTEM_PROMPT,
    CHAT_DAILY_TOKEN_BUDGET: String(RESERVED * turns + RESERVED - 1),
    AUDIT_SECRET_KEY: PRODUCTION_ENV.AUDIT_SECRET_KEY,
    RATE_LIMIT_CHAT: "1000",
    RATE_LIMIT_PER_MINUTE: "1000",
    RATE_LIMIT_BURST: "1000",
  };
}

let target: TestApp | undefined;
const others: Instance[] = [];
afterEach(() => {
  for (const other of others.splice(0)) other.close();
  target?.close();
  target = undefined;
});

function reservations(app: TestApp) {
  return app.db.select().from(chatReservations).all();
}

function usage(app: TestApp) {
  const row = app.db.select().from(chatUsage).get();
  return { used: row?.usedTokens, reserved: row?.reservedTokens };
}

async function reclaimedMetric(app: { app: TestApp["app"] }) {
  const text = await (await send(app, "/metrics")).text();
  return Number(/^chat_reservations_reclaimed_total (\d+)$/m.exec(text)?.[1] ?? "NaN");
}

function turnOf(app: TestApp, session: Session) {
  return chat(app, asUser(session), { message: MESSAGE });
}

/** Every instance's maintenance, every 10 s of the clock for `seconds`, as their timers would. */
function maintainFor(
  clock: ManualClock,
  seconds: number,
  ...instances: { services: TestApp["services"] }[]
) {
  for (let elapsed = 0; elapsed < seconds; elapsed += 10) {
    for (const instance of instances) instance.services.runMaintenance();
    clock.advance(10_000);
  }
  for (const instance of instances) instance.services.runMaintenance();
}

/**
 * A day with room for one turn, that turn in flight in the target (its provider waiting until
 * `provider.open()`), and another process on the file with the same clock.
 */
async function liveTurnBeside() {
  const clock = new ManualClock(0, 1);
  const provider = gatedProvider();
  const env = envFor(1);
  target = buildTestApp({ env, clock, chatProvider: provider });
  const other = anotherInstance(target, { clock, env });
  others.push(other);
  const alice = await signUp(target);
  const live = turnOf(target, alice);
  await waitFor(() => provider.waiting() === 1);
  return { app: target, clock, provider, other, alice, live };
}

/**
 * A turn in flight in the target and another process beside it, then 90 s in which nothing can be
 * written (`outage` starts it and returns what ends it); after it the other process's timer fires
 * first, then both run for a minute. The live turn must keep its reservation throughout.
 */
async function liveTurnOutlives(
  outage: (instances: { services: TestApp["services"] }[]) => () => void,
) {
  const { app, clock, provider, other, alice, live } = await liveTurnBeside();
  maintainFor(clock, 30, app, other);
  const end = outage([app, other]);
  maintainFor(clock, 90, app, other);
  end();
  expect(reservations(app)).toHaveLength(1);
  other.services.runMaintenance();
  clock.advance(5_000);
  other.services.runMaintenance();
  expect(reservations(app)).toHaveLength(1);
  maintainFor(clock, 60, app, other);
  expect(reservations(app)).toHaveLength(1);
  expect(await reclaimedMetric(other)).toBe(0);
  const ask = await send(other, "/api/chat", {
    body: { message: MESSAGE },
    headers: asUser(alice),
  });
  expect(ask.status).toBe(429);
  provider.open();
  expect((await live).status).toBe(200);
  expect(usage(app).reserved).toBe(0);
}

function budgetOf(app: TestApp) {
  return (app.services.features.find((f) => f.name === "chat") as ChatFeature).budget;
}

describe("a process killed mid-turn", () => {
  test("SIGKILL while the upstream answers: another process gives the reservation back a minute later, and the day admits again", async () => {
    const upstream = await startOpenAiServer();
    upstream.setDefault({ kind: "hang" });
    const clock = new ManualClock(0, 1);
    const env = envFor(1);
    target = buildTestApp({ env, clock });
    try {
      const alice = await signUp(target);
      const child = await startService({
        ...env,
        DATABASE_PATH: target.databasePath,
        JWT_SECRET_KEY: target.config.jwt.secretKey,
        CSRF_SECRET_KEY: target.config.csrf.secretKey,
        OPENAI_API_KEY: upstream.apiKey,
        OPENAI_BASE_URL: upstream.url,
        CHAT_MAX_COMPLETION_TOKENS: String(MAX_COMPLETION),
      });
      const pending = fetch(new URL("/api/chat", child.url), {
        method: "POST",
        headers: { ...asUser(alice), "content-type": "application/json" },
        body: JSON.stringify({ message: MESSAGE }),
      }).catch(() => null);
      await upstream.waitForRequests(1);
      expect(reservations(target)).toHaveLength(1);
      child.proc.kill("SIGKILL");
      await child.proc.exited;
      await pending;
      expect(usage(target)).toEqual({ used: 0, reserved: RESERVED });

      // The day has room for that one turn, and the dead process holds it.
      expect((await turnOf(target, alice)).status).toBe(429);
      // Not yet a minute since the process last said it was running: nothing is given back.
      clock.advance(Date.now() - clock.now());
      maintainFor(clock, HOLDER_GONE_AFTER_MS / 1000 - 10, target);
      expect(reservations(target)).toHaveLength(1);
      expect((await turnOf(target, alice)).status).toBe(429);

      clock.advance(15_000);
      target.services.runMaintenance();
      expect(reservations(target)).toEqual([]);
      expect(usage(target)).toEqual({ used: 0, reserved: 0 });
      expect(await reclaimedMetric(target)).toBe(1);
      const said = target.logs.entries.find((line) =>
        String(line.msg).startsWith("chat reservations given back"),
      );
      expect(said).toMatchObject({ level: "warn", turns: 1, tokens: RESERVED });
      expect((await turnOf(target, alice)).status).toBe(200);
    } finally {
      upstream.stop();
    }
  }, 30_000);
});

describe("a process that keeps running", () => {
  test("keeps its turn for five minutes of maintenance runs in every process; it settles as usual", async () => {
    const clock = new ManualClock(0, 1);
    const provider = gatedProvider();
    target = buildTestApp({ env: envFor(1), clock, chatProvider: provider });
    const other = anotherInstance(target, { clock, env: envFor(1) });
    others.push(other);
    const alice = await signUp(target);
    const turn = turnOf(target, alice);
    await waitFor(() => provider.waiting() === 1);
    for (let run = 0; run < 30; run++) {
      clock.advance(10_000);
      target.services.runMaintenance();
      other.services.runMaintenance();
    }
    expect(reservations(target)).toHaveLength(1);
    expect(usage(target).reserved).toBe(RESERVED);
    expect(await reclaimedMetric(other)).toBe(0);
    expect(
      (await send(other, "/api/chat", { body: { message: MESSAGE }, headers: asUser(alice) }))
        .status,
    ).toBe(429);

    provider.open();
    const answered = await turn;
    expect(answered.status).toBe(200);
    const { usage: charged } = (await answered.json()) as {
      usage: { promptTokens: number; completionTokens: number };
    };
    expect(reservations(target)).toEqual([]);
    expect(usage(target)).toEqual({
      used: charged.promptTokens + charged.completionTokens,
      reserved: 0,
    });
  });
});

describe("a process stalled past the minute", () => {
  test("its turn, given back meanwhile, settles without taking the reservations admitted since: the day is still full", async () => {
    const clock = new ManualClock(0, 1);
    const stalled = gatedProvider();
    const env = envFor(2);
    target = buildTestApp({ env, clock, chatProvider: stalled });
    const busy = gatedProvider();
    const other = anotherInstance(target, { clock, env, chatProvider: busy });
    others.push(other);
    const alice = await signUp(target);
    const late = turnOf(target, alice);
    await waitFor(() => stalled.waiting() === 1);

    // The target says nothing for a minute (its event loop held): the other process gives its
    // turn back, and admits two turns of its own in the room that made.
    maintainFor(clock, HOLDER_GONE_AFTER_MS / 1000 + 10, other);
    expect(reservations(target)).toEqual([]);
    expect(await reclaimedMetric(other)).toBe(1);
    const ask = () =>
      send(other, "/api/chat", { body: { message: MESSAGE }, headers: asUser(alice) });
    const admitted = [ask(), ask()];
    await waitFor(() => busy.waiting() === 2);
    expect(usage(target).reserved).toBe(2 * RESERVED);

    stalled.open();
    expect((await late).status).toBe(200);
    // Charged its usage; the two turns in flight keep their reservations.
    expect(usage(target).reserved).toBe(2 * RESERVED);
    expect(usage(target).used).toBeGreaterThan(0);
    expect((await ask()).status).toBe(429);

    busy.open();
    for (const response of await Promise.all(admitted)) expect(response.status).toBe(200);
    expect(usage(target).reserved).toBe(0);
    expect(reservations(target)).toEqual([]);
  });
});

describe("every process runs the maintenance", () => {
  test("a gone process's turn is given back once, however many processes look: a live turn keeps its share", async () => {
    const clock = new ManualClock(0, 1);
    const provider = gatedProvider();
    const env = envFor(2);
    target = buildTestApp({ env, clock, chatProvider: provider });
    const gone = anotherInstance(target, { clock, env, chatProvider: gatedProvider() });
    const other = anotherInstance(target, { clock, env });
    others.push(gone, other);
    const alice = await signUp(target);
    // One turn in a process that is then never heard of again, one in the target.
    void send(gone, "/api/chat", { body: { message: MESSAGE }, headers: asUser(alice) });
    await waitFor(() => reservations(target!).length === 1);
    const live = turnOf(target, alice);
    await waitFor(() => provider.waiting() === 1);
    expect(usage(target).reserved).toBe(2 * RESERVED);

    maintainFor(clock, HOLDER_GONE_AFTER_MS / 1000 + 10, target, other);
    expect(usage(target).reserved).toBe(RESERVED);
    expect(reservations(target)).toHaveLength(1);
    expect((await reclaimedMetric(target)) + (await reclaimedMetric(other))).toBe(1);

    provider.open();
    expect((await live).status).toBe(200);
    expect(usage(target).reserved).toBe(0);
  });
});

describe("nothing reached the database for a while", () => {
  test("a write lock held for over a minute: when it ends, no live process's turn is taken for gone before it could say it runs", async () => {
    // Something else holds the write lock (a long transaction, a VACUUM): every maintenance run
    // is deferred, so nobody says it is running.
    await liveTurnOutlives((instances) => {
      for (const instance of instances) instance.services.db.$client.run("PRAGMA busy_timeout = 0");
      const locker = new Database(target!.databasePath);
      locker.run("BEGIN IMMEDIATE");
      return () => {
        locker.run("COMMIT");
        locker.close();
      };
    });
  });

  test("a clock stepped forward past the minute: the first runs after it take no live process for gone", async () => {
    const { app, clock, provider, other, live } = await liveTurnBeside();
    maintainFor(clock, 30, app, other);
    clock.advance(5 * 60_000);
    other.services.runMaintenance();
    maintainFor(clock, 60, app, other);
    expect(reservations(app)).toHaveLength(1);
    provider.open();
    expect((await live).status).toBe(200);
    expect(usage(app).reserved).toBe(0);
  });

  test("a process's clock corrected after a step forward: once killed, its turn is given back a minute after its last word", async () => {
    const clock = new ManualClock(0, 1);
    target = buildTestApp({ env: envFor(1), clock });
    const alice = await signUp(target);
    const owner = { kind: "user" as const, id: alice.userId };
    // A process whose clock ran an hour ahead once, then was put right, then killed.
    const crashed = new ChatBudget(target.db.$client, RESERVED * 2);
    expect(crashed.reserve(owner, RESERVED, clock.now() + 60 * 60_000).kind).toBe("reserved");
    crashed.reclaim(clock.now() + 60 * 60_000);
    crashed.reserve(owner, 0, clock.now());
    crashed.reclaim(clock.now());
    maintainFor(clock, HOLDER_GONE_AFTER_MS / 1000 + 10, target);
    expect(reservations(target)).toEqual([]);
    expect(usage(target).reserved).toBe(0);
  });
});

describe("nothing could be written for a while, or the clock stepped back", () => {
  test("a file that refuses every write for over a minute (a full disk): once it takes them again, no live process's turn is taken for gone", async () => {
    // Every write fails, and not as a lock: the other process holds no turn, so a run of it that
    // writes nothing would still succeed.
    await liveTurnOutlives((instances) => {
      const connections = instances.map((instance) => instance.services.db.$client);
      for (const connection of connections) connection.run("PRAGMA query_only = ON");
      return () => {
        for (const connection of connections) connection.run("PRAGMA query_only = OFF");
      };
    });
  });

  test("a clock stepped back an hour: a dead process's turn is given back about a minute later, not an hour", async () => {
    const clock = new ManualClock(0, 1);
    target = buildTestApp({ env: envFor(1), clock });
    const alice = await signUp(target);
    const crashed = new ChatBudget(target.db.$client, RESERVED * 2);
    expect(crashed.reserve({ kind: "user", id: alice.userId }, RESERVED, clock.now()).kind).toBe(
      "reserved",
    );
    maintainFor(clock, 30, target);
    clock.advance(-60 * 60_000);
    maintainFor(clock, 30, target);
    expect(reservations(target)).toEqual([]);
    expect(usage(target).reserved).toBe(0);
  });

  test("processes that each live 25 s (a crash loop): a dead process's turn is still given back", async () => {
    const clock = new ManualClock(0, 1);
    const env = envFor(1);
    target = buildTestApp({ env, clock });
    const alice = await signUp(target);
    const crashed = new ChatBudget(target.db.$client, RESERVED * 2);
    expect(crashed.reserve({ kind: "user", id: alice.userId }, RESERVED, clock.now()).kind).toBe(
      "reserved",
    );
    for (let generation = 0; generation < 5 && reservations(target).length > 0; generation++) {
      const instance = anotherInstance(target, { clock, env });
      // As src/index.ts starts the features, then the maintenance timer runs every 10 s.
      await instance.services.features.find((f) => f.name === "chat")!.start!();
      for (const _ of [1, 2]) {
        clock.advance(10_000);
        instance.services.runMaintenance();
      }
      clock.advance(5_000);
      instance.close();
    }
    expect(reservations(target)).toEqual([]);
    expect(usage(target).reserved).toBe(0);
  });
});

describe("rows written into the file by hand", () => {
  function gone(app: TestApp, userId: string, tokens: string) {
    const day = utcDay(app.services.clock.now());
    app.db.$client.run("PRAGMA ignore_check_constraints = ON");
    app.db.$client.run(
      `INSERT INTO chat_reservations (owner_kind, owner_id, day, tokens, holder, created_at) VALUES ('user', ?, ?, ${tokens}, 'hand-made', 0)`,
      [userId, day],
    );
    app.db.$client.run("PRAGMA ignore_check_constraints = OFF");
  }

  test("the service cannot write a reservation that is not a count", () => {
    target = buildTestApp({ env: envFor(1) });
    for (const tokens of ["-1", "1e999", "'twelve'", "1.5", "NULL"]) {
      expect(() =>
        target!.db.$client.run(
          `INSERT INTO chat_reservations (owner_kind, owner_id, day, tokens, holder, created_at) VALUES ('user', 'u', '2026-01-01', ${tokens}, 'h', 0)`,
        ),
      ).toThrow("constraint failed");
    }
  });

  test("tokens that are not a count (infinite, negative, text naming someone) give nothing back, stop nothing and reach no log line", async () => {
    const clock = new ManualClock(0, 1);
    const provider = gatedProvider();
    const env = envFor(2);
    target = buildTestApp({ env, clock, chatProvider: provider });
    const other = anotherInstance(target, { clock, env });
    others.push(other);
    const alice = await signUp(target);
    const bob = await signUp(target);
    // Alice's day exists, with a turn in flight; a dead process holds one of Bob's.
    const live = turnOf(target, alice);
    await waitFor(() => provider.waiting() === 1);
    const crashed = new ChatBudget(target.db.$client, RESERVED * 3);
    expect(crashed.reserve({ kind: "user", id: bob.userId }, RESERVED, clock.now()).kind).toBe(
      "reserved",
    );
    for (const tokens of ["-1e999", "1e999", "-5", "'alice@example.com sk_live_secret'"]) {
      gone(target, alice.userId, tokens);
    }
    maintainFor(clock, HOLDER_GONE_AFTER_MS / 1000 + 10, target, other);
    // Bob's dead turn is given back; the hand-made rows are gone and gave nothing back; Alice's
    // live turn keeps its reservation.
    expect(reservations(target).map((r) => r.ownerId)).toEqual([alice.userId]);
    const days = target.db.select().from(chatUsage).all();
    expect(Object.fromEntries(days.map((d) => [d.ownerId, d.reservedTokens]))).toEqual({
      [alice.userId]: RESERVED,
      [bob.userId]: 0,
    });
    const logged = target.logs.text + other.logs.text;
    expect(logged).not.toContain("sk_live_secret");
    expect(logged).not.toContain("maintenance failed");
    const said = [...target.logs.entries, ...other.logs.entries].filter((line) =>
      String(line.msg).startsWith("chat reservations given back"),
    );
    for (const line of said) expect(typeof line.tokens).toBe("number");
    provider.open();
    expect((await live).status).toBe(200);
  });

  test("a row whose id the file put past 2^53 is given back once and deleted, not at every run of every process (probe 54a F2)", async () => {
    const clock = new ManualClock(0, 1);
    const env = envFor(2);
    target = buildTestApp({ env, clock });
    const other = anotherInstance(target, { clock, env });
    others.push(other);
    const alice = await signUp(target);
    expect((await turnOf(target, alice)).status).toBe(200);
    const day = utcDay(clock.now());
    // 2^53 + 1, read by JavaScript as 2^53: a delete by that id matches no row.
    target.db.$client.run(
      "UPDATE chat_usage SET reserved_tokens = 500 WHERE owner_id = ? AND day = ?",
      [alice.userId, day],
    );
    target.db.$client.run(
      `INSERT INTO chat_reservations (id, owner_kind, owner_id, day, tokens, holder, created_at)
       VALUES (9007199254740993, 'user', ?, ?, 7, 'dead-holder', 0)`,
      [alice.userId, day],
    );
    maintainFor(clock, HOLDER_GONE_AFTER_MS / 1000 + 60, target, other);
    expect(reservations(target)).toEqual([]);
    expect(usage(target).reserved).toBe(493);
    expect((await reclaimedMetric(target)) + (await reclaimedMetric(other))).toBe(1);
    const said = [...target.logs.entries, ...other.logs.entries].filter((line) =>
      String(line.msg).startsWith("chat reservations given back"),
    );
    expect(said).toHaveLength(1);
  });

  test("a trigger that ignores every reservation: the turn fails (500) and the write lock is let go; nothing is reserved", async () => {
    target = buildTestApp({ env: envFor(1) });
    const alice = await signUp(target);
    target.db.$client.run(
      "CREATE TRIGGER swallow BEFORE INSERT ON chat_reservations BEGIN SELECT RAISE(IGNORE); END",
    );
    const failed = await turnOf(target, alice);
    expect(failed.status).toBe(500);
    expect((await failed.json()) as { code: string }).toMatchObject({ code: "INTERNAL" });
    const other = new Database(target.databasePath);
    other.run("PRAGMA busy_timeout = 0");
    other.run("BEGIN IMMEDIATE");
    other.run("ROLLBACK");
    other.close();
    expect(usage(target).reserved ?? 0).toBe(0);
  });

  test("marks of gone processes with nothing reserved are cleared, 1,000 a run", () => {
    const clock = new ManualClock(0, 1);
    target = buildTestApp({ env: envFor(1), clock });
    target.db.$client.run(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
       INSERT INTO chat_holders (holder, seen_at) SELECT 'gone-' || i, 0 FROM n`,
    );
    const gone = () =>
      target!.db.$client
        .query<{ n: number }, []>(
          "SELECT count(*) AS n FROM chat_holders WHERE holder LIKE 'gone-%'",
        )
        .get()!.n;
    target.services.runMaintenance();
    expect(gone()).toBe(500);
    target.services.runMaintenance();
    expect(gone()).toBe(0);
    // This process's own mark stays.
    expect(target.db.select().from(chatHolders).all()).toHaveLength(1);
  });

  test("rows made under a live process's id are given back at most 1,000 a run", async () => {
    const provider = gatedProvider();
    target = buildTestApp({ env: envFor(1), chatProvider: provider });
    const alice = await signUp(target);
    const live = turnOf(target, alice);
    await waitFor(() => provider.waiting() === 1);
    const holder = budgetOf(target).turns.holder;
    target.db.$client.run(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
       INSERT INTO chat_reservations (owner_kind, owner_id, day, tokens, holder, created_at)
       SELECT 'user', 'u' || i, '2026-01-01', 1, ?, 0 FROM n`,
      [holder],
    );
    const left = () => reservations(target!).length;
    target.services.runMaintenance();
    expect(left()).toBe(1 + 1500);
    target.services.runMaintenance();
    target.services.runMaintenance();
    // The turn in flight was never among them.
    expect(left()).toBe(1);
    provider.open();
    expect((await live).status).toBe(200);
    expect(left()).toBe(0);
  });
});

/** A message the file holds at an id two short of 2^53: no turn's two messages can follow it. */
function markPastIds(app: TestApp) {
  app.db.$client.run(
    "INSERT INTO chat_conversations (id, owner_kind, owner_id, created_at, updated_at) VALUES ('c-x', 'user', 'nobody', 0, 0)",
  );
  app.db.$client.run(
    "INSERT INTO chat_messages (id, conversation_id, role, content, tokens, created_at) VALUES (9007199254740990, 'c-x', 'user', 'x', 1, 0)",
  );
}

describe("a turn whose storing fails", () => {
  test("a file whose message ids cannot go on: the turn fails before the upstream is called, nothing charged or reserved (probe 54a note)", async () => {
    const provider = gatedProvider();
    target = buildTestApp({ env: envFor(1), chatProvider: provider });
    const alice = await signUp(target);
    markPastIds(target);
    const failed = await turnOf(target, alice);
    expect(failed.status).toBe(500);
    expect(provider.waiting()).toBe(0);
    expect(reservations(target)).toEqual([]);
    // Refused before anything was reserved: no day of usage at all.
    expect(target.db.select().from(chatUsage).all()).toEqual([]);
  });

  test("ids that cannot go on once the upstream has answered: the turn fails, its usage is still charged, nothing stays reserved", async () => {
    const provider = gatedProvider();
    target = buildTestApp({ env: envFor(1), chatProvider: provider });
    const alice = await signUp(target);
    const turn = turnOf(target, alice);
    await waitFor(() => provider.waiting() === 1);
    markPastIds(target);
    provider.open();
    const failed = await turn;
    expect(failed.status).toBe(500);
    expect(reservations(target)).toEqual([]);
    const after = usage(target);
    expect(after.reserved).toBe(0);
    expect(after.used).toBeGreaterThan(0);
    expect(after.used).toBeLessThanOrEqual(RESERVED);
  });

  test("a settle rolled back with its storing leaves a reservation no turn holds: the process's next maintenance run gives it back", async () => {
    target = buildTestApp({ env: envFor(1) });
    const budget = budgetOf(target);
    const owner = { kind: "user" as const, id: (await signUp(target)).userId };
    const now = target.services.clock.now();
    const outcome = budget.reserve(owner, RESERVED, now);
    if (outcome.kind !== "reserved") throw new Error(outcome.kind);
    const storing = target.db.$client.transaction(() => {
      budget.settle(outcome.reservation, 10, now);
      throw new Error("the storing failed after the settle");
    });
    expect(() => storing.immediate()).toThrow("the storing failed");
    expect(reservations(target)).toHaveLength(1);
    expect(budget.usage(outcome.reservation.day, owner)[0]).toMatchObject({
      reservedTokens: RESERVED,
    });

    target.services.runMaintenance();
    expect(reservations(target)).toEqual([]);
    expect(budget.usage(outcome.reservation.day, owner)[0]).toMatchObject({
      usedTokens: 0,
      reservedTokens: 0,
    });
    expect(budget.reserve(owner, RESERVED, now).kind).toBe("reserved");
  });

  test("a turn still in flight is never its own process's to give back", async () => {
    const provider = gatedProvider();
    target = buildTestApp({ env: envFor(1), chatProvider: provider });
    const alice = await signUp(target);
    const turn = turnOf(target, alice);
    await waitFor(() => provider.waiting() === 1);
    target.services.runMaintenance();
    expect(reservations(target)).toHaveLength(1);
    provider.open();
    expect((await turn).status).toBe(200);
    expect(usage(target).reserved).toBe(0);
  });
});
