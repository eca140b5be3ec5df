/**
 * Sign-ins and registrations hash with argon2id in a bounded number of slots and a bounded queue:
 * past it they are refused at once with 503 and Retry-After, before any work, instead of a real
 * user waiting behind a whole flood from rotating addresses (probe 30a F3: 49 s).
 */
import { afterEach, expect, test } from "bun:test";
import { AppError } from "../../../src/errors";
import { createPasswordWork } from "../../../src/modules/auth/password-work";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { STRONG_PASSWORD, signUp } from "../../support/auth";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

test("a slot runs at once, the queue waits its turn in order, past it a refusal at once", async () => {
  let refused = 0;
  const work = createPasswordWork({ concurrency: 1, queue: 1 }, () => refused++);
  const order: string[] = [];
  const first = gate();
  const running = work.run(async () => {
    order.push("first started");
    await first.opened;
    return "first";
  });
  const queued = work.run(async () => {
    order.push("second started");
    return "second";
  });
  const over = work.run(async () => "third");
  await expect(over).rejects.toBeInstanceOf(AppError);
  await over.catch((error: AppError) => {
    expect(error.status).toBe(503);
    expect(error.code).toBe("SERVICE_UNAVAILABLE");
    expect(error.headers).toEqual({ "retry-after": "2" });
  });
  expect(refused).toBe(1);
  await Bun.sleep(5);
  expect(order).toEqual(["first started"]);
  first.open();
  expect(await running).toBe("first");
  expect(await queued).toBe("second");
  expect(order).toEqual(["first started", "second started"]);
  // Both slots free again: the next runs at once.
  expect(await work.run(async () => "fourth")).toBe("fourth");
});

test("a work that throws frees its slot for the next", async () => {
  const work = createPasswordWork({ concurrency: 1, queue: 0 });
  await expect(work.run(async () => Promise.reject(new Error("argon2 failed")))).rejects.toThrow(
    "argon2 failed",
  );
  expect(await work.run(async () => "after")).toBe("after");
});

test("a flood of sign-ins past the queue is answered 503 at once, never counted against the account, and counted", async () => {
  current = buildTestApp({
    passwordWork: { concurrency: 1, queue: 1 },
    env: { RATE_LIMIT_LOGIN: "1000", RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
  });
  const user = await signUp(current);
  // Fewer than the account's lockout (10 failures), so each reaches the password check.
  const attempts = Array.from({ length: 8 }, (_, i) =>
    send(current!, "/api/auth/login", {
      body: { email: user.email, password: "not the password 123!" },
      peer: `2001:db8:${i}::1`,
    }),
  );
  const answers = await Promise.all(attempts);
  const statuses = answers.map((answer) => answer.status);
  const busy = answers.filter((answer) => answer.status === 503);
  expect(busy.length).toBeGreaterThan(0);
  expect(statuses.filter((status) => status === 401).length).toBeGreaterThan(0);
  expect(statuses.every((status) => status === 401 || status === 503)).toBe(true);
  for (const answer of busy) {
    expect(answer.headers.get("retry-after")).toBe("2");
    expect(((await answer.json()) as { code: string }).code).toBe("SERVICE_UNAVAILABLE");
  }
  const metrics = await (await send(current, "/metrics")).text();
  expect(metrics).toContain(`auth_password_work_refused_total ${busy.length}\n`);
  // The service shedding load is no error: the access lines of the 503s are warnings (probe 30e F8).
  const refusedLines = current.logs.entries.filter(
    (entry) => entry.route === "/api/auth/login" && entry.status === 503,
  );
  expect(refusedLines).toHaveLength(busy.length);
  expect(new Set(refusedLines.map((entry) => entry.level))).toEqual(new Set(["warn"]));
  // Only the attempts that got a verdict were failures: audited and counted towards the lockout.
  current.services.audit.flush();
  const failed = current.db.$client
    .query<{ n: number }, []>(
      "SELECT count(*) AS n FROM audit_events WHERE type = 'auth.login.failed'",
    )
    .get();
  expect(failed?.n).toBe(8 - busy.length);
  // The refused ones were given back: eight more failures still leave room for the right one.
  for (let i = 0; i < busy.length; i++) {
    await send(current, "/api/auth/login", {
      body: { email: user.email, password: "not the password 123!" },
      peer: `2001:db8:${100 + i}::1`,
    });
  }
  const right = await send(current, "/api/auth/login", {
    body: { email: user.email, password: STRONG_PASSWORD },
  });
  expect(right.status).toBe(200);
});

test("registrations past the queue are refused 503 and create no account", async () => {
  current = buildTestApp({
    passwordWork: { concurrency: 1, queue: 0 },
    env: { RATE_LIMIT_REGISTER: "1000", RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
  });
  const answers = await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      send(current!, "/api/auth/register", {
        body: { email: `flood-${i}@example.test`, password: STRONG_PASSWORD },
        peer: `2001:db8:${i}::1`,
      }),
    ),
  );
  const created = answers.filter((answer) => answer.status === 201).length;
  const busy = answers.filter((answer) => answer.status === 503).length;
  expect(created).toBeGreaterThan(0);
  expect(busy).toBeGreaterThan(0);
  expect(created + busy).toBe(6);
  const users = current.db.$client
    .query<{ n: number }, []>("SELECT count(*) AS n FROM users")
    .get();
  expect(users?.n).toBe(created);
});

test("a sign-in refused by the full queue is no attempt: the rate limits' charge for it is given back (probes 30e F1, 30f F1)", async () => {
  current = buildTestApp({
    passwordWork: { concurrency: 1, queue: 0 },
    env: { RATE_LIMIT_LOGIN: "6", RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
  });
  const user = await signUp(current);
  const attempt = () =>
    send(current!, "/api/auth/login", {
      body: { email: user.email, password: "not the password 123!" },
      peer: "192.0.2.77",
    });
  // Six at once from one address and to one account: all within the limit of six, most refused
  // by the queue.
  const first = await Promise.all(Array.from({ length: 6 }, attempt));
  const busy = first.filter((answer) => answer.status === 503);
  expect(busy.length).toBeGreaterThan(0);
  for (const answer of busy) expect(answer.headers.get("retry-after")).toBe("2");
  // Only the attempts that got a verdict are spent: as many more are admitted, then 429.
  const verdicts = 6 - busy.length;
  const statuses: number[] = [];
  for (let i = 0; i < busy.length + 1; i++) statuses.push((await attempt()).status);
  expect(statuses.slice(0, busy.length).every((status) => status === 401)).toBe(true);
  expect(statuses.at(-1)).toBe(429);
  expect(verdicts + busy.length).toBe(6);
});
