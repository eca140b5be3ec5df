/**
 * Daily token budgets: exact at the boundary under concurrent requests (one process, and two
 * instances on one file): each turn reserves its prompt's estimate plus the provider's completion
 * cap, so `used` never passes the budget however many turns run at once; 429 QUOTA_EXCEEDED with
 * Retry-After until the next UTC midnight and an audit event, settling to the real usage (never
 * more than reserved), an aborted turn charged its prompt, a new day; the admin view
 * (`GET /api/admin/usage`) and the CLI (`usage:show`, `usage:reset`).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chatUsage } from "../../../src/db/schema";
import { ChatBudget, secondsUntilNextUtcDay, utcDay } from "../../../src/modules/chat/budget";
import type { ChatFeature } from "../../../src/modules/chat/feature";
import { loadFaq } from "../../../src/modules/chat/providers/faq";
import { createOfflineProvider } from "../../../src/modules/chat/providers/offline";
import type { ChatProvider } from "../../../src/modules/chat/providers/provider";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { createKey, logIn, type Session, signUp } from "../../support/auth";
import { asKey, asUser, chat, gatedProvider, slowProvider } from "../../support/chat";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { anotherInstance } from "../../support/instance";
import { waitFor } from "../../support/wait";

// 40 characters: 10 tokens; "zzz yyyyyy": 3 (it matches no FAQ entry: the long fallback answers). A new conversation's turn is estimated at 13.
const SYSTEM_PROMPT = "S".repeat(40);
const MESSAGE = "zzz yyyyyy";
const ESTIMATE = 13;
/** The shipped FAQ's longest answer (the fallback): the offline provider's completion cap. */
const MAX_COMPLETION = createOfflineProvider(loadFaq(null)).maxCompletionTokens;
/** What each turn reserves: its prompt's estimate and the most its reply can cost. */
const RESERVED = ESTIMATE + MAX_COMPLETION;
const ADMITTED = 5;
const BUDGET = RESERVED * ADMITTED + RESERVED - 1;
const env = {
  CHAT_SYSTEM_PROMPT: SYSTEM_PROMPT,
  // Room for five reservations and not six.
  CHAT_DAILY_TOKEN_BUDGET: String(BUDGET),
  RATE_LIMIT_CHAT: "1000",
  RATE_LIMIT_PER_MINUTE: "1000",
  RATE_LIMIT_BURST: "1000",
};

let target: TestApp | undefined;
afterEach(() => target?.close());

/** Sends `count` turns at once; resolves with each status once every one is admitted or refused. */
function burst(
  app: { app: { handle(request: Request): Promise<Response> } },
  session: Session,
  count: number,
  settled: { count: number },
) {
  return Array.from({ length: count }, () =>
    send(app, "/api/chat", {
      body: { message: MESSAGE },
      headers: asUser(session),
    }).then((response) => {
      settled.count++;
      return response;
    }),
  );
}

describe("the boundary, concurrently", () => {
  test("20 requests at once in one process: exactly the 5 that fit are admitted", async () => {
    const provider = gatedProvider();
    const clock = new ManualClock();
    target = buildTestApp({ env, chatProvider: provider, clock });
    const alice = await signUp(target);
    const settled = { count: 0 };
    const pending = burst(target, alice, 20, settled);
    // Every request has either reserved (and waits on the provider) or been refused.
    await waitFor(() => provider.waiting() + settled.count === 20);
    expect(provider.waiting()).toBe(ADMITTED);
    const usageRow = target.db.select().from(chatUsage).get()!;
    expect(usageRow.reservedTokens).toBe(ADMITTED * RESERVED);
    provider.open();
    const responses = await Promise.all(pending);
    const statuses = responses.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(ADMITTED);
    expect(statuses.filter((s) => s === 429)).toHaveLength(20 - ADMITTED);

    const refused = responses.find((r) => r.status === 429)!;
    expect(((await refused.json()) as { code: string }).code).toBe("QUOTA_EXCEEDED");
    expect(refused.headers.get("retry-after")).toBe(String(secondsUntilNextUtcDay(clock.now())));

    // Settled to the real usage: reservations gone, each turn's prompt and completion counted.
    const replies = await Promise.all(
      responses
        .filter((r) => r.status === 200)
        .map(
          (r) => r.json() as Promise<{ usage: { promptTokens: number; completionTokens: number } }>,
        ),
    );
    const spent = replies.reduce((n, r) => n + r.usage.promptTokens + r.usage.completionTokens, 0);
    const after = target.db.select().from(chatUsage).get()!;
    expect(after).toMatchObject({ reservedTokens: 0, usedTokens: spent, requests: ADMITTED });
    // The guarantee: however many turns ran at once, the day's usage is within the budget.
    expect(after.usedTokens).toBeLessThanOrEqual(BUDGET);

    // Audited: who was refused, once a day for each principal (probe 27f F1: a chained row per
    // refused turn); the metric counts every refusal.
    target.services.audit.flush();
    const quotaEvents = () =>
      target!.db.$client
        .query("SELECT actor, outcome FROM audit_events WHERE type = 'chat.quota_exceeded'")
        .all() as { actor: string; outcome: string }[];
    expect(quotaEvents()).toEqual([{ actor: `user:${alice.userId}`, outcome: "denied" }]);
    // Another principal's first refusal is audited too.
    const bob = await signUp(target);
    for (let i = 0; i < ADMITTED; i++) {
      expect(
        (await send(target, "/api/chat", { body: { message: MESSAGE }, headers: asUser(bob) }))
          .status,
      ).toBe(200);
    }
    expect(
      (await send(target, "/api/chat", { body: { message: MESSAGE }, headers: asUser(bob) }))
        .status,
    ).toBe(429);
    target.services.audit.flush();
    expect(quotaEvents().map((event) => event.actor)).toEqual([
      `user:${alice.userId}`,
      `user:${bob.userId}`,
    ]);

    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain(`chat_requests_total{provider="offline",outcome="quota"} 16`);
    expect(metrics).toContain(
      `chat_requests_total{provider="offline",outcome="ok"} ${2 * ADMITTED}`,
    );
  });

  test("two instances on one file, 10 each at once: still exactly 5 in all", async () => {
    const first = gatedProvider();
    const second = gatedProvider();
    target = buildTestApp({ env, chatProvider: first });
    const other = anotherInstance(target, { env, chatProvider: second });
    try {
      const alice = await signUp(target);
      const settled = { count: 0 };
      const pending = [...burst(target, alice, 10, settled), ...burst(other, alice, 10, settled)];
      await waitFor(() => first.waiting() + second.waiting() + settled.count === 20);
      expect(first.waiting() + second.waiting()).toBe(ADMITTED);
      first.open();
      second.open();
      const statuses = (await Promise.all(pending)).map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(ADMITTED);
      expect(statuses.filter((s) => s === 429)).toHaveLength(20 - ADMITTED);
      const row = target.db.select().from(chatUsage).get()!;
      expect(row.reservedTokens).toBe(0);
      expect(row.usedTokens).toBeLessThanOrEqual(BUDGET);
    } finally {
      other.close();
    }
  });
});

describe("over the day", () => {
  test("once the day has no room for a turn every turn is refused until the next UTC day", async () => {
    const clock = new ManualClock();
    target = buildTestApp({
      env: { ...env, CHAT_DAILY_TOKEN_BUDGET: String(RESERVED * 2 + 10) },
      clock,
    });
    const alice = await signUp(target);
    // Room for two reservations: the third turn is refused, and nothing passed the budget.
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(200);
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(200);
    const refused = await chat(target, asUser(alice), { message: MESSAGE });
    expect(refused.status).toBe(429);
    expect(target.db.select().from(chatUsage).get()!.usedTokens).toBe(RESERVED * 2);
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(86_400);
    // Another principal has its own budget.
    const bob = await signUp(target);
    expect((await chat(target, asUser(bob), { message: MESSAGE })).status).toBe(200);

    clock.advance(retryAfter * 1000);
    // Signed in again (the access token has expired by the next day).
    const again = await logIn(target, alice.email);
    expect((await chat(target, asUser(again), { message: MESSAGE })).status).toBe(200);
  });

  test("with the budget off (0) nothing is refused and usage is still counted", async () => {
    target = buildTestApp({ env: { ...env, CHAT_DAILY_TOKEN_BUDGET: "0" } });
    const alice = await signUp(target);
    for (let i = 0; i < 3; i++) {
      expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(200);
    }
    expect(target.db.select().from(chatUsage).get()!.requests).toBe(3);
  });
});

describe("admins see and reset usage", () => {
  test("GET /api/admin/usage: today, by principal, another day; admins only, audited", async () => {
    target = buildTestApp({ env });
    const admin = await signUp(target, { role: "admin" });
    const alice = await signUp(target);
    const bob = await signUp(target);
    await chat(target, asUser(alice), { message: MESSAGE });
    await chat(target, asUser(bob), { message: MESSAGE });

    const all = await send(target, "/api/admin/usage", { headers: asUser(admin) });
    expect(all.status).toBe(200);
    const page = (await all.json()) as {
      day: string;
      budget: number;
      usage: { principal: string; usedTokens: number; requests: number }[];
    };
    expect(page.day).toBe(utcDay(Date.now()));
    expect(page.budget).toBe(Number(env.CHAT_DAILY_TOKEN_BUDGET));
    expect(page.usage.map((u) => u.principal).sort()).toEqual(
      [`user:${alice.userId}`, `user:${bob.userId}`].sort(),
    );

    const one = (await (
      await send(target, `/api/admin/usage?principal=user:${alice.userId}`, {
        headers: asUser(admin),
      })
    ).json()) as typeof page;
    expect(one.usage).toHaveLength(1);
    expect(one.usage[0]!.requests).toBe(1);

    const otherDay = (await (
      await send(target, "/api/admin/usage?day=2020-01-01", { headers: asUser(admin) })
    ).json()) as typeof page;
    expect(otherDay).toMatchObject({ day: "2020-01-01", usage: [] });
    const leapDay = await send(target, "/api/admin/usage?day=2024-02-29", {
      headers: asUser(admin),
    });
    expect(leapDay.status).toBe(200);

    for (const query of [
      "?day=2020-13-45",
      // Days Date.parse takes as the next month's first days.
      "?day=2026-02-30",
      "?day=2026-04-31",
      "?day=2026-02-29",
      "?day=yesterday",
      "?principal=root",
      "?principal=user:",
      // An id with what a copy from a sentence or a chat tool leaves after it, or not an id Palisade
      // gives: refused, not answered with nothing and audited as typed (probe 38a F3).
      `?principal=user:${alice.userId}.`,
      `?principal=user:${alice.userId},`,
      `?principal=user:${alice.userId}%E2%80%8B`,
      `?principal=user:${alice.userId}%00`,
      `?principal=user:${alice.userId.toUpperCase()}`,
      "?principal=user:13",
      "?principal=whatsapp:w1",
    ]) {
      const bad = await send(target, `/api/admin/usage${query}`, { headers: asUser(admin) });
      expect([query, bad.status]).toEqual([query, 422]);
    }
    expect((await send(target, "/api/admin/usage", { headers: asUser(alice) })).status).toBe(403);

    const audited = target.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'admin.usage.queried'")
      .get() as { n: number };
    expect(audited.n).toBe(4);
  });

  test("GET /api/admin/usage pages by principal: every row once, in order, however it is paged", async () => {
    target = buildTestApp({ env });
    const admin = await signUp(target, { role: "admin" });
    const day = "2026-03-14";
    // 210 principals of every kind: ids that sort differently as text and as numbers, with a
    // colon, and the odd ids only a file writer can make (a leading colon, spaces, U+2028, 300
    // characters) — and another day's rows, which no page of this day may show.
    const odd = [":lead", "a b", "nb\u00a0sp", "line\u2028sep", "x".repeat(300)];
    const owners = [
      ...Array.from({ length: 120 }, (_, i) => ({ kind: "whatsapp" as const, id: `${i * 7}:x` })),
      ...Array.from({ length: 60 }, (_, i) => ({ kind: "user" as const, id: String(i * 13) })),
      ...Array.from({ length: 25 }, (_, i) => ({ kind: "key" as const, id: `k${i}` })),
      ...odd.map((id) => ({ kind: "user" as const, id })),
    ];
    const row = (owner: { kind: "user" | "key" | "whatsapp"; id: string }, on: string) => ({
      ownerKind: owner.kind,
      ownerId: owner.id,
      day: on,
      usedTokens: 5,
      requests: 1,
      updatedAt: Date.now(),
    });
    target.db
      .insert(chatUsage)
      .values(owners.map((owner) => row(owner, day)))
      .run();
    target.db
      .insert(chatUsage)
      .values(owners.slice(0, 30).map((owner) => row(owner, "2026-03-15")))
      .run();
    // SQLite's order: the kind, then the id's bytes.
    const bytes = (text: string) => Buffer.from(text);
    const expected = [...owners]
      .sort((a, b) =>
        a.kind === b.kind ? Buffer.compare(bytes(a.id), bytes(b.id)) : a.kind < b.kind ? -1 : 1,
      )
      .map((owner) => `${owner.kind}:${owner.id}`);

    type Page = { day: string; usage: { principal: string }[]; nextCursor: string | null };
    const read = async (query: string): Promise<Page> => {
      const response = await send(target!, `/api/admin/usage${query}`, { headers: asUser(admin) });
      expect(response.status).toBe(200);
      return (await response.json()) as Page;
    };
    // The first page names the day; the next ones only pass the cursor back.
    const readAll = async (limit: string) => {
      const seen: string[] = [];
      let page = await read(`?day=${day}${limit}`);
      let pages = 1;
      seen.push(...page.usage.map((u) => u.principal));
      while (page.nextCursor !== null) {
        page = await read(`?cursor=${page.nextCursor}${limit}`);
        expect(page.day).toBe(day);
        seen.push(...page.usage.map((u) => u.principal));
        pages++;
      }
      return { seen, pages };
    };

    // By default a page holds 100 rows.
    const first = await read(`?day=${day}`);
    expect(first.usage).toHaveLength(100);
    expect(await readAll("")).toEqual({ seen: expected, pages: 3 });
    expect(await readAll("&limit=7")).toEqual({ seen: expected, pages: 30 });
    // A page exactly as long as what is left says there is no next one.
    expect(await readAll("&limit=210")).toEqual({ seen: expected, pages: 1 });
    expect((await read(`?day=${day}&limit=500`)).usage).toHaveLength(210);
    // Rows added while paging: one before the cursor is not read, one after it is, none twice.
    const page1 = await read(`?day=${day}&limit=50`);
    target.db
      .insert(chatUsage)
      .values(row({ kind: "key", id: "a-new-one" }, day))
      .run();
    target.db
      .insert(chatUsage)
      .values(row({ kind: "whatsapp", id: "zzz" }, day))
      .run();
    const rest = await read(`?cursor=${page1.nextCursor}&limit=500`);
    expect(rest.usage.map((u) => u.principal)).toEqual([...expected.slice(50), "whatsapp:zzz"]);
    // The cursor holds its day: with another day it is 422, with the same one it is fine.
    expect((await read(`?cursor=${page1.nextCursor}&day=${day}`)).usage[0]!.principal).toBe(
      expected[50]!,
    );
    const otherDay = await send(
      target,
      `/api/admin/usage?cursor=${page1.nextCursor}&day=2026-03-15`,
      {
        headers: asUser(admin),
      },
    );
    expect(otherDay.status).toBe(422);
    expect(JSON.stringify(await otherDay.json())).toContain("query/cursor");
    // A cursor is what a page gave, nothing else; limits as the audit log's.
    const forged = (parts: string[]) => parts.join(".");
    const b64 = (text: string) => Buffer.from(text).toString("base64url");
    for (const query of [
      "?cursor=user:a",
      "?cursor=%2B%2F",
      `?cursor=${forged(["2026-02-30", "user", b64("a")])}`,
      `?cursor=${forged([day, "root", b64("a")])}`,
      `?cursor=${forged([day, "user", ""])}`,
      // "a" is YQ; YR decodes to the same byte, a second spelling of one position.
      `?cursor=${forged([day, "user", "YR"])}`,
      `?cursor=${forged([day, "user", `${b64("a")}=`])}`,
      `?cursor=${forged([day, "user"])}`,
      `?cursor=${forged([day, "user", b64("a"), "x"])}`,
      `?cursor=${b64(JSON.stringify([day, "user", "a"]))}`,
      `?cursor=${"A".repeat(1500)}`,
      "?limit=0",
      "?limit=501",
      "?limit=ten",
    ]) {
      const bad = await send(target, `/api/admin/usage${query}`, { headers: asUser(admin) });
      expect([query.slice(0, 40), bad.status]).toEqual([query.slice(0, 40), 422]);
    }
    // Ids that are not valid UTF-8 (only a file writer can make one) are paged past too: the
    // cursor holds the id's stored bytes, not its text, which would sort before the row itself.
    const raw = "2026-03-16";
    // And an id stored as a BLOB, which SQLite sorts after every text (here "u2", between "u1" and
    // "u3" as bytes): the cursor says so, or the next page would start among the texts again.
    for (const id of [
      "CAST(x'ff61' AS TEXT)",
      "CAST(x'ff62' AS TEXT)",
      "CAST(x'c3' AS TEXT)",
      "x'7532'",
    ]) {
      target.db.$client.run(
        `INSERT INTO chat_usage (owner_kind, owner_id, day, used_tokens, requests, updated_at)
         VALUES ('user', ${id}, ?, 5, 1, 0)`,
        [raw],
      );
    }
    for (const id of ["a", "u1", "u3"]) {
      target.db
        .insert(chatUsage)
        .values(row({ kind: "user", id }, raw))
        .run();
    }
    target.db
      .insert(chatUsage)
      .values(row({ kind: "whatsapp", id: "w1" }, raw))
      .run();
    let page = await read(`?day=${raw}&limit=1`);
    let rawPages = 1;
    while (page.nextCursor !== null && rawPages < 10) {
      page = await read(`?cursor=${page.nextCursor}&limit=1`);
      rawPages++;
    }
    expect(rawPages).toBe(8);
    expect(page.usage.map((u) => u.principal)).toEqual(["whatsapp:w1"]);
    // What was viewed is audited: the day, and the principal when one was asked for.
    await read(`?day=${day}&principal=user:01a23371-1217-7705-8871-410ef76a5130`);
    const details = target.db.$client
      .query<{ detail: string }, []>(
        "SELECT detail FROM audit_events WHERE type = 'admin.usage.queried' ORDER BY id DESC LIMIT 2",
      )
      .all()
      .map((r) => JSON.parse(r.detail));
    expect(details[0]).toEqual({
      filters: "day,principal",
      day,
      principal: "user:01a23371-1217-7705-8871-410ef76a5130",
    });
  });

  test("the paged usage view: every spelling of the path, every credential, two pages at once", async () => {
    target = buildTestApp({ env });
    const admin = await signUp(target, { role: "admin" });
    const day = "2026-03-14";
    target.db
      .insert(chatUsage)
      .values(
        Array.from({ length: 5 }, (_, i) => ({
          ownerKind: "user" as const,
          ownerId: `u${i}`,
          day,
          usedTokens: 1,
          requests: 1,
          updatedAt: 0,
        })),
      )
      .run();
    const query = `?day=${day}&limit=2`;
    const first = await send(target, `/api/admin/usage${query}`, { headers: asUser(admin) });
    const firstPage = (await first.json()) as { usage: unknown[]; nextCursor: string };
    // The trailing slash is the same route, limits and all; HEAD answers as GET does, bodiless.
    const slash = await send(target, `/api/admin/usage/${query}`, { headers: asUser(admin) });
    expect(await slash.json()).toEqual(firstPage);
    const head = await send(target, `/api/admin/usage${query}`, {
      method: "HEAD",
      headers: asUser(admin),
    });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    expect(
      (await send(target, "/api/admin/usage?limit=0", { method: "HEAD", headers: asUser(admin) }))
        .status,
    ).toBe(422);
    // Credentials: none 401; a user 403; a key with every scope but admin 403; an admin key 200;
    // a token and a key together 401.
    const user = await signUp(target);
    const chatKey = createKey(target, ["chat", "metrics"]).key;
    const adminKey = createKey(target, ["admin"], admin.userId).key;
    const statusWith = async (headers: Record<string, string>) =>
      (await send(target!, `/api/admin/usage${query}`, { headers })).status;
    expect(await statusWith({})).toBe(401);
    expect(await statusWith(asUser(user))).toBe(403);
    expect(await statusWith(asKey(chatKey))).toBe(403);
    expect(await statusWith(asKey(adminKey))).toBe(200);
    expect(await statusWith({ ...asUser(admin), ...asKey(adminKey) })).toBe(401);
    // Two readers of the next page at once see the same rows.
    const [a, b] = await Promise.all(
      [0, 1].map(async () =>
        (
          await send(target!, `/api/admin/usage?cursor=${firstPage.nextCursor}&limit=2`, {
            headers: asUser(admin),
          })
        ).json(),
      ),
    );
    expect(a).toEqual(b);
    expect((a as { usage: { principal: string }[] }).usage.map((u) => u.principal)).toEqual([
      "user:u2",
      "user:u3",
    ]);
  });

  test("a page of usage reads the day's index from where the page before ended: no sort of the day", () => {
    target = buildTestApp({ env });
    const budget = new ChatBudget(target.db.$client, 0);
    const plan = (query: { toSQL(): { sql: string; params: unknown[] } }) => {
      const { sql, params } = query.toSQL();
      return target!.db.$client
        .query<{ detail: string }, never[]>(`EXPLAIN QUERY PLAN ${sql}`)
        .all(...(params as never[]))
        .map((step) => step.detail)
        .join("; ");
    };
    const first = plan(budget.usageQuery("2026-03-14", undefined, { limit: 101 }));
    expect(first).toBe("SEARCH chat_usage USING INDEX chat_usage_day_owner (day=?)");
    // A later page starts its search at the cursor, not at the day's first row.
    const later = plan(
      budget.usageQuery("2026-03-14", undefined, {
        after: { kind: "user", idBytes: new TextEncoder().encode("x"), blob: false },
        limit: 101,
      }),
    );
    expect(later).toBe(
      "SEARCH chat_usage USING INDEX chat_usage_day_owner (day=? AND (owner_kind,owner_id)>(?,?))",
    );
  });

  test("a usage row whose counts the file holds as something else: null on the page and in the CLI, the day's other rows as they are", async () => {
    target = buildTestApp({ env });
    const admin = await signUp(target, { role: "admin" });
    const day = "2026-03-14";
    const insert = target.db.$client.prepare(
      "INSERT INTO chat_usage (owner_kind, owner_id, day, used_tokens, reserved_tokens, requests, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0)",
    );
    insert.run("user", "sound", day, 40, 0, 2);
    // What someone editing the file may leave: text, a fraction, a negative count, a BLOB.
    insert.run("user", "text", day, "lots", 1.5, -3);
    insert.run("user", "blob", day, new Uint8Array([1, 2]), 0, 1);

    const response = await send(target, `/api/admin/usage?day=${day}`, { headers: asUser(admin) });
    expect(response.status).toBe(200);
    const page = (await response.json()) as { usage: Record<string, unknown>[] };
    expect(page.usage).toEqual([
      { principal: "user:blob", day, usedTokens: null, reservedTokens: 0, requests: 1 },
      { principal: "user:sound", day, usedTokens: 40, reservedTokens: 0, requests: 2 },
      { principal: "user:text", day, usedTokens: null, reservedTokens: null, requests: null },
    ]);

    const shown = await cliInProcess(["usage:show", "--day", day], {
      DATABASE_PATH: target.databasePath,
      CHAT_DAILY_TOKEN_BUDGET: String(BUDGET),
    });
    expect(shown.code).toBe(0);
    expect(shown.stdout.split("\n")).toEqual([
      `user:blob  ${day}  used (not a count) of ${BUDGET}  reserved 0  requests 1`,
      `user:sound  ${day}  used 40 of ${BUDGET}  reserved 0  requests 2`,
      `user:text  ${day}  used (not a count) of ${BUDGET}  reserved (not a count)  requests (not a count)`,
    ]);
  });

  test("usage:show and usage:reset through the CLI; the reset is audited and admits again", async () => {
    // Room for one turn's reservation, not two.
    const budget = String(RESERVED + 50);
    target = buildTestApp({ env: { ...env, CHAT_DAILY_TOKEN_BUDGET: budget } });
    const alice = await signUp(target);
    const principal = `user:${alice.userId}`;
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(200);
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(429);

    const cliEnv = { DATABASE_PATH: target.databasePath, CHAT_DAILY_TOKEN_BUDGET: budget };
    const shown = await cliInProcess(["usage:show"], cliEnv);
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(
      new RegExp(`^${principal}  \\d{4}-\\d{2}-\\d{2}  used \\d+ of ${budget}`),
    );
    const json = await cliInProcess(["usage:show", "--principal", principal, "--json"], cliEnv);
    const row = JSON.parse(json.stdout) as { usedTokens: number; requests: number };
    expect(row.requests).toBe(1);
    expect(row.usedTokens).toBe(RESERVED);

    const reset = await cliInProcess(["usage:reset", "--principal", principal], cliEnv);
    expect(reset.code).toBe(0);
    expect(reset.stdout).toBe(
      `reset ${principal} on ${utcDay(Date.now())}: ${row.usedTokens} used and 0 reserved tokens cleared`,
    );
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(200);

    const audited = target.db.$client
      .query("SELECT actor, detail FROM audit_events WHERE type = 'chat.usage.reset'")
      .get() as { actor: string; detail: string };
    expect(audited.actor).toBe("cli");
    expect(JSON.parse(audited.detail)).toMatchObject({ principal, cleared: row.usedTokens });

    expect((await cliInProcess(["usage:reset"], cliEnv)).code).toBe(2);
    expect((await cliInProcess(["usage:reset", "--principal", "nobody"], cliEnv)).code).toBe(2);
    expect((await cliInProcess(["usage:show", "--day", "2026-02-30x"], cliEnv)).code).toBe(2);
    const nobody = "key:01a23371-1217-7705-8871-410ef76a5131";
    const none = await cliInProcess(["usage:reset", "--principal", nobody], cliEnv);
    expect(none).toMatchObject({ code: 1 });
    expect(none.stderr).toContain(`no chat usage for ${nobody}`);
    expect((await cliInProcess(["usage:show", "--day", "2020-01-01"], cliEnv)).stdout).toBe(
      "no chat usage on 2020-01-01",
    );
  });
});

/** The offline provider, but reporting `factor` times its usage: an upstream whose tokenizer counts more. */
function overReportingProvider(factor: number): ChatProvider {
  const base = createOfflineProvider(loadFaq(null));
  const inflate = (usage: { promptTokens: number; completionTokens: number }) => ({
    promptTokens: usage.promptTokens * factor,
    completionTokens: usage.completionTokens,
  });
  return {
    name: base.name,
    maxCompletionTokens: base.maxCompletionTokens,
    async complete(messages, options) {
      const completion = await base.complete(messages, options);
      return { ...completion, usage: inflate(completion.usage) };
    },
    async *stream(messages, options) {
      for await (const delta of base.stream(messages, options)) {
        yield delta.kind === "usage" ? { kind: "usage", usage: inflate(delta.usage) } : delta;
      }
    },
  };
}

describe("a process killed mid-turn", () => {
  test("usage:reset gives its turn's reservation back at once, with the used tokens (rather than a minute later)", async () => {
    // Room for one turn's reservation, not two.
    const budget = String(RESERVED + 50);
    target = buildTestApp({ env: { ...env, CHAT_DAILY_TOKEN_BUDGET: budget } });
    const alice = await signUp(target);
    const principal = `user:${alice.userId}`;
    // What a process killed between reserving and settling leaves behind: a reservation nobody
    // will settle or release.
    const crashed = new ChatBudget(target.db.$client, Number(budget));
    expect(crashed.reserve({ kind: "user", id: alice.userId }, RESERVED, Date.now()).kind).toBe(
      "reserved",
    );
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(429);

    const cliEnv = { DATABASE_PATH: target.databasePath, CHAT_DAILY_TOKEN_BUDGET: budget };
    const reset = await cliInProcess(["usage:reset", "--principal", principal], cliEnv);
    expect(reset.stdout).toBe(
      `reset ${principal} on ${utcDay(Date.now())}: 0 used and ${RESERVED} reserved tokens cleared`,
    );
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(200);
    const audited = target.db.$client
      .query("SELECT detail FROM audit_events WHERE type = 'chat.usage.reset'")
      .get() as { detail: string };
    expect(JSON.parse(audited.detail)).toMatchObject({ cleared: 0, reservedCleared: RESERVED });
  });
});

describe("a reset while turns are in flight", () => {
  test("the turns reserved before it settle without taking back the reservations made after it: no more is admitted than the budget", () => {
    target = buildTestApp({ env });
    const budget = new ChatBudget(target.db.$client, RESERVED * 2);
    const owner = { kind: "user" as const, id: "u-reset" };
    const now = Date.now();
    const reserve = () => budget.reserve(owner, RESERVED, now);
    const before = [reserve(), reserve()];
    expect(before.map((outcome) => outcome.kind)).toEqual(["reserved", "reserved"]);
    expect(budget.reset(owner, utcDay(now), now)).toEqual({ used: 0, reserved: RESERVED * 2 });
    const after = [reserve(), reserve(), reserve()];
    expect(after.map((outcome) => outcome.kind)).toEqual(["reserved", "reserved", "over_budget"]);
    // The turns from before the reset finish: charged to the day given back, and the turns
    // admitted since keep their reservations, so the day is still full.
    for (const outcome of before) {
      if (outcome.kind === "reserved") budget.settle(outcome.reservation, RESERVED, now);
    }
    expect(budget.usage(utcDay(now), owner)[0]).toMatchObject({
      usedTokens: RESERVED * 2,
      reservedTokens: RESERVED * 2,
    });
    expect(reserve().kind).toBe("over_budget");
  });
});

describe("usage never passes the budget", () => {
  test("20 concurrent turns of an upstream counting more than the estimate: charged at most what each reserved", async () => {
    target = buildTestApp({ env, chatProvider: overReportingProvider(10) });
    const alice = await signUp(target);
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        chat(
          target!,
          asUser(alice),
          { message: MESSAGE },
          i % 2 ? {} : { accept: "text/event-stream" },
        ),
      ),
    );
    // Read to the end: a stream's turn is stored once its last piece is sent.
    await Promise.all(responses.map((r) => r.text()));
    expect(responses.filter((r) => r.status === 200)).toHaveLength(ADMITTED);
    const row = target.db.select().from(chatUsage).get()!;
    expect(row).toMatchObject({ reservedTokens: 0, requests: ADMITTED });
    expect(row.usedTokens).toBe(ADMITTED * RESERVED);
    expect(row.usedTokens).toBeLessThanOrEqual(BUDGET);
    // The message rows keep the upstream's own figures.
    const stored = target.db.$client
      .query<{ p: number }, []>(
        "SELECT max(prompt_tokens) AS p FROM chat_messages WHERE role = 'assistant'",
      )
      .get()!;
    expect(stored.p).toBe(ESTIMATE * 10);
  });

  test("a reply shorter than the cap settles to its real usage: the room it did not use is free again", async () => {
    // "how do I pay": a FAQ entry shorter than the fallback answers it.
    target = buildTestApp({ env: { ...env, CHAT_DAILY_TOKEN_BUDGET: String(RESERVED) } });
    const alice = await signUp(target);
    const first = await chat(target, asUser(alice), { message: "how do I pay" });
    expect(first.status).toBe(200);
    const { usage } = (await first.json()) as {
      usage: { promptTokens: number; completionTokens: number };
    };
    expect(usage.completionTokens).toBeLessThan(MAX_COMPLETION);
    const row = target.db.select().from(chatUsage).get()!;
    expect(row).toMatchObject({
      reservedTokens: 0,
      usedTokens: usage.promptTokens + usage.completionTokens,
    });
    // The next turn needs a whole reservation again: it no longer fits.
    expect((await chat(target, asUser(alice), { message: MESSAGE })).status).toBe(429);
  });
});

describe("an aborted turn is charged what the upstream was sent", () => {
  const LONG = "a".repeat(4000); // 1000 prompt tokens sent upstream

  async function abandon(accept: string): Promise<{ provider: ReturnType<typeof slowProvider> }> {
    // 300 ms before each piece (and before a whole reply): nothing has come back at 100 ms.
    const provider = slowProvider(300);
    target = buildTestApp({
      env: { ...env, CHAT_DAILY_TOKEN_BUDGET: "100000" },
      chatProvider: provider,
      clock: new ManualClock(),
    });
    const alice = await signUp(target);
    const client = new AbortController();
    const pending = target.app
      .handle(
        new Request("http://localhost/api/chat", {
          method: "POST",
          signal: client.signal,
          headers: { ...asUser(alice), "content-type": "application/json", accept },
          body: JSON.stringify({ message: LONG }),
        }),
      )
      .then((response) => response.text())
      .catch(() => null);
    await Bun.sleep(100);
    client.abort();
    await pending;
    return { provider };
  }

  test("a turn aborted before the provider was called costs nothing: the reservation is given back", async () => {
    const provider = slowProvider(300);
    target = buildTestApp({ env, chatProvider: provider });
    const chatFeature = target.services.features.find((f) => f.name === "chat") as ChatFeature;
    const owner = { kind: "whatsapp" as const, id: "sender-hash" };
    const signal = AbortSignal.abort();
    for (const run of ["complete", "stream"] as const) {
      const prepared = await chatFeature.service.prepare({
        owner,
        message: MESSAGE,
        requestId: run,
      });
      if (prepared.kind !== "ready") throw new Error("not admitted");
      const attempt =
        run === "complete"
          ? chatFeature.service.complete(prepared.turn, signal)
          : (async () => {
              for await (const _ of chatFeature.service.stream(prepared.turn, signal)) {
              }
            })();
      await attempt.catch(() => null);
    }
    const row = target.db.select().from(chatUsage).get()!;
    expect(row).toMatchObject({ usedTokens: 0, reservedTokens: 0, requests: 0 });
  });

  for (const [name, accept] of [
    ["streamed", "text/event-stream"],
    ["answered whole", "application/json"],
  ] as const) {
    test(`${name}, abandoned before any text: the prompt's estimate is charged, nothing is stored`, async () => {
      await abandon(accept);
      await waitFor(() => {
        const row = target!.db.select().from(chatUsage).get();
        return row !== undefined && row.reservedTokens === 0 && row.requests === 1;
      });
      const row = target!.db.select().from(chatUsage).get()!;
      expect(row.usedTokens).toBe(ESTIMATE - 3 + LONG.length / 4);
      const messages = target!.db.$client
        .query<{ n: number }, []>("SELECT count(*) AS n FROM chat_messages")
        .get()!;
      expect(messages.n).toBe(0);
      const metrics = await (await send(target!, "/metrics")).text();
      expect(metrics).toContain(`chat_requests_total{provider="offline",outcome="incomplete"} 1`);
    });
  }
});
