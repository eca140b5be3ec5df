/**
 * CHAT_MAX_CONCURRENT_TURNS: the turns one principal may have in flight at once, decided with the
 * budget's reservation in one transaction, so exact however many requests arrive together, in one
 * process or in several on the file; 429 TOO_MANY_TURNS past it, JSON or streamed; a slot is free
 * again the moment its turn ends, however it ends; each principal counts apart.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chatReservations, chatUsage } from "../../../src/db/schema";
import { loadFaq } from "../../../src/modules/chat/providers/faq";
import { createOfflineProvider } from "../../../src/modules/chat/providers/offline";
import type { ChatProvider } from "../../../src/modules/chat/providers/provider";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp, testConfig } from "../../support/app";
import { createKey, signUp } from "../../support/auth";
import { asKey, asUser, chat, SSE } from "../../support/chat";
import { cliInProcess } from "../../support/cli";
import { anotherInstance } from "../../support/instance";
import { waitFor } from "../../support/wait";

const env = {
  CHAT_MAX_CONCURRENT_TURNS: "2",
  RATE_LIMIT_CHAT: "1000",
  RATE_LIMIT_PER_MINUTE: "1000",
  RATE_LIMIT_BURST: "1000",
};

let target: TestApp | undefined;
afterEach(() => target?.close());

interface Problem {
  code: string;
  status: number;
  requestId: string;
}

/**
 * `count` turns of one credential at once, every other one to `/api/chat/` (a spelling that reaches
 * the same handler); each response, also put in `answered` when it comes.
 */
function together(
  app: { app: { handle(request: Request): Promise<Response> } },
  credential: Record<string, string>,
  count: number,
  answered: Response[],
  headers: Record<string, string> = {},
) {
  return Array.from({ length: count }, (_, i) =>
    send(app, i % 2 === 0 ? "/api/chat" : "/api/chat/", {
      body: { message: `question ${i}` },
      headers: { ...credential, ...headers },
    }).then((response) => {
      answered.push(response);
      return response;
    }),
  );
}

/**
 * The offline provider held until `open()`, or until its caller leaves (then it ends as an upstream
 * does, with the abort); `running()` counts the calls held now.
 */
function heldProvider(base = createOfflineProvider(loadFaq(null))) {
  const gate = Promise.withResolvers<void>();
  let running = 0;
  const hold = async (signal: AbortSignal | undefined) => {
    running++;
    try {
      await new Promise<void>((resolve, reject) => {
        signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
        gate.promise.then(resolve);
      });
    } finally {
      running--;
    }
  };
  const provider: ChatProvider & { open(): void; running(): number } = {
    name: base.name,
    maxCompletionTokens: base.maxCompletionTokens,
    open: () => gate.resolve(),
    running: () => running,
    async complete(messages, options) {
      await hold(options?.signal);
      return base.complete(messages, options);
    },
    async *stream(messages, options) {
      await hold(options?.signal);
      yield* base.stream(messages, options);
    },
  };
  return provider;
}

const reservationsOf = (app: TestApp, ownerKind: string) =>
  app.db
    .select()
    .from(chatReservations)
    .all()
    .filter((row) => row.ownerKind === ownerKind);

async function metricsText(app: TestApp): Promise<string> {
  return (await send(app, "/metrics")).text();
}

describe("CHAT_MAX_CONCURRENT_TURNS", () => {
  test("4 by default in production, 0 (no limit) in development; 0–10000", () => {
    const path = "/nonexistent/palisade.db";
    expect(testConfig(path, PRODUCTION_ENV).chat.concurrentTurns).toBe(4);
    expect(testConfig(path).chat.concurrentTurns).toBe(0);
    expect(testConfig(path, { CHAT_MAX_CONCURRENT_TURNS: "0" }).chat.concurrentTurns).toBe(0);
    expect(() => testConfig(path, { CHAT_MAX_CONCURRENT_TURNS: "-1" })).toThrow(
      /CHAT_MAX_CONCURRENT_TURNS/,
    );
    expect(() => testConfig(path, { CHAT_MAX_CONCURRENT_TURNS: "10001" })).toThrow(
      /CHAT_MAX_CONCURRENT_TURNS/,
    );
  });

  test("six turns of one user at once, JSON and streamed: two run, four are 429 TOO_MANY_TURNS; another user and the next turn after one ends get in", async () => {
    const provider = heldProvider();
    target = buildTestApp({ env, chatProvider: provider });
    const alice = await signUp(target);
    const bob = await signUp(target);
    const refused: Response[] = [];
    const pending = [
      ...together(target, asUser(alice), 3, refused),
      ...together(target, asUser(alice), 3, refused, SSE),
    ];
    await waitFor(() => provider.running() + refused.length === 6, { what: "every turn decided" });
    expect(provider.running()).toBe(2);
    expect(refused).toHaveLength(4);
    for (const response of refused) {
      expect(response.status).toBe(429);
      expect(response.headers.get("content-type")).toStartWith("application/problem+json");
      expect(response.headers.get("retry-after")).toBe("1");
      const problem = (await response.json()) as Problem;
      expect(problem.code).toBe("TOO_MANY_TURNS");
      expect(problem.requestId).toBe(response.headers.get("x-request-id")!);
    }
    // The refused turns reserved nothing: only the two running hold rows.
    expect(target.db.select().from(chatReservations).all()).toHaveLength(2);

    // Another principal has slots of its own.
    const bobs = together(target, asUser(bob), 1, []);
    await waitFor(() => provider.running() === 3, { what: "bob's turn running" });

    provider.open();
    const responses = await Promise.all([...pending, ...bobs]);
    expect(responses.map((r) => r.status).sort()).toEqual([200, 200, 200, 429, 429, 429, 429]);
    // A streamed turn ends as its client reads it.
    await Promise.all(responses.filter((r) => !r.bodyUsed).map((response) => response.text()));
    await waitFor(() => reservationsOf(target!, "user").length === 0, {
      what: "every reservation ended",
    });
    // Slots free again once the turns end.
    expect((await chat(target, asUser(alice), { message: "again" })).status).toBe(200);
    expect(await metricsText(target)).toContain(
      'chat_requests_total{provider="offline",outcome="concurrent"} 4',
    );
  });

  test("usage:reset gives the day's tokens back but not the slots of turns still running; each takes nothing from `reserved` when it ends (probe 84b F1)", async () => {
    const provider = heldProvider();
    target = buildTestApp({ env, chatProvider: provider });
    const alice = await signUp(target);
    const pending = together(target, asUser(alice), 2, []);
    await waitFor(() => provider.running() === 2, { what: "two turns running" });
    const cliEnv = { DATABASE_PATH: target.databasePath, CHAT_MAX_CONCURRENT_TURNS: "2" };
    const reset = await cliInProcess(
      ["usage:reset", "--principal", `user:${alice.userId}`],
      cliEnv,
    );
    expect(reset.code).toBe(0);
    expect(reset.stdout).toContain("reserved tokens cleared");
    // The reset left both slots held: a third turn is refused, as before it.
    const third = await chat(target, asUser(alice), { message: "a third" });
    expect(third.status).toBe(429);
    expect(((await third.json()) as Problem).code).toBe("TOO_MANY_TURNS");
    expect(provider.running()).toBe(2);
    expect(target.db.select().from(chatUsage).get()).toMatchObject({ reservedTokens: 0 });

    provider.open();
    expect((await Promise.all(pending)).map((response) => response.status)).toEqual([200, 200]);
    await waitFor(() => reservationsOf(target!, "user").length === 0, {
      what: "every reservation ended",
    });
    // Charged to the day given back; nothing taken from `reserved` twice.
    expect(target.db.select().from(chatUsage).get()).toMatchObject({
      reservedTokens: 0,
      requests: 2,
    });
    expect((await chat(target, asUser(alice), { message: "again" })).status).toBe(200);
  });

  test("two instances on one file, three turns each at once: exactly two run in all", async () => {
    const first = heldProvider();
    const second = heldProvider();
    target = buildTestApp({ env, chatProvider: first });
    const other = anotherInstance(target, { env, chatProvider: second });
    try {
      const alice = await signUp(target);
      const refused: Response[] = [];
      const pending = [
        ...together(target, asUser(alice), 3, refused),
        ...together(other, asUser(alice), 3, refused),
      ];
      await waitFor(() => first.running() + second.running() + refused.length === 6, {
        what: "every turn decided",
      });
      expect(first.running() + second.running()).toBe(2);
      first.open();
      second.open();
      const statuses = (await Promise.all(pending)).map((r) => r.status).sort();
      expect(statuses).toEqual([200, 200, 429, 429, 429, 429]);
    } finally {
      other.close();
    }
  });

  test("a turn whose client leaves frees its slot; an API key of the same user counts apart", async () => {
    const provider = heldProvider();
    target = buildTestApp({
      env: { ...env, CHAT_MAX_CONCURRENT_TURNS: "1" },
      chatProvider: provider,
    });
    const alice = await signUp(target);
    const leaving = new AbortController();
    const left = target.app
      .handle(
        new Request("http://localhost/api/chat", {
          method: "POST",
          headers: { ...asUser(alice), "content-type": "application/json" },
          body: JSON.stringify({ message: "I will leave" }),
          signal: leaving.signal,
        }),
      )
      .catch(() => null);
    await waitFor(() => provider.running() === 1, { what: "the first turn running" });
    expect((await chat(target, asUser(alice), { message: "second" })).status).toBe(429);
    // The user's own API key is another principal, with a slot of its own.
    const { key } = await createKey(target, ["chat"], alice.userId);
    const byKey = together(target, asKey(key), 1, []);
    await waitFor(() => provider.running() === 2, { what: "the key's turn running" });
    leaving.abort();
    await left;
    await waitFor(() => reservationsOf(target!, "user").length === 0, {
      what: "the left turn's reservation ended",
    });
    const again = together(target, asUser(alice), 1, []);
    await waitFor(() => provider.running() === 2, { what: "the user's next turn running" });
    provider.open();
    expect((await Promise.all([...again, ...byKey])).map((r) => r.status)).toEqual([200, 200]);
  });
});
