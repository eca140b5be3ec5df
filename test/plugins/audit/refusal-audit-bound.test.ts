/**
 * Refusals that block nobody (the request guard's, CSRF's, a webhook signature that does not
 * verify) are audited once per address and minute, and a kind of refusal at most
 * REFUSAL_AUDIT_KEYS addresses a minute: a flood from rotating addresses wrote a 90-day audit row
 * per request (probe 30a F2). Every refusal is still answered, logged and counted.
 */
import { afterEach, expect, test } from "bun:test";
import { STRIPE_WEBHOOK_PATH } from "../../../src/modules/webhooks/stripe";
import {
  auditedOncePerWindow,
  oncePerWindow,
  REFUSAL_AUDIT_WINDOW_MS,
} from "../../../src/plugins/audit/once-per-window";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { ManualClock } from "../../support/clock";
import { WEBHOOK_SECRET } from "../../support/payments";
import { WHATSAPP_PATH, whatsappEnv } from "../../support/whatsapp";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const ROOMY = {
  RATE_LIMIT_LOGIN: "1000",
  RATE_LIMIT_PER_MINUTE: "1000",
  RATE_LIMIT_BURST: "1000",
  RATE_LIMIT_WEBHOOKS: "1000",
};

function auditedOf(target: TestApp, type: string): { ip: string; detail: string }[] {
  target.services.audit.flush();
  return target.db.$client
    .query<{ ip: string; detail: string }, [string]>(
      "SELECT ip, detail FROM audit_events WHERE type = ? ORDER BY id",
    )
    .all(type);
}

const textLogin = (target: TestApp, peer: string) =>
  send(target, "/api/auth/login", {
    body: "not json",
    headers: { "content-type": "text/plain" },
    peer,
  });

test("the guard's refusals: once per address, code and minute, each still answered and logged", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ clock, env: ROOMY });
  for (let i = 0; i < 5; i++) expect((await textLogin(current, "192.0.2.7")).status).toBe(415);
  // Another code from the same address is its own row; another address too.
  const duplicated = await send(current, "/api/auth/login", {
    body: { email: "a@b.test", password: "x" },
    headers: { "content-type": "application/json, application/json" },
    peer: "192.0.2.7",
  });
  expect(duplicated.status).toBe(400);
  expect((await textLogin(current, "198.51.100.9")).status).toBe(415);
  let rows = auditedOf(current, "request.rejected");
  expect(rows.map((row) => [row.ip, JSON.parse(row.detail).code])).toEqual([
    ["192.0.2.7", "UNSUPPORTED_MEDIA_TYPE"],
    ["192.0.2.7", "DUPLICATE_HEADER"],
    ["198.51.100.9", "UNSUPPORTED_MEDIA_TYPE"],
  ]);
  const logged = current.logs.entries.filter((entry) => entry.route === "/api/auth/login");
  expect(logged.filter((entry) => entry.status === 415)).toHaveLength(6);

  // A minute on, the same address's next refusal is audited again.
  clock.advance(REFUSAL_AUDIT_WINDOW_MS);
  expect((await textLogin(current, "192.0.2.7")).status).toBe(415);
  rows = auditedOf(current, "request.rejected");
  expect(rows).toHaveLength(4);
  expect(rows.at(-1)!.ip).toBe("192.0.2.7");
});

test("addresses in one IPv6 /64 are one address; each new /64 is its own until the bound", async () => {
  current = buildTestApp({ env: ROOMY });
  for (let i = 1; i <= 4; i++) await textLogin(current, `2001:db8:0:1::${i}`);
  await textLogin(current, "2001:db8:0:2::1");
  expect(auditedOf(current, "request.rejected").map((row) => row.ip)).toEqual([
    "2001:db8:0:1::1",
    "2001:db8:0:2::1",
  ]);
});

test("at most the bound's addresses a window are audited; a remembered one's window passing makes room", () => {
  const { firstInWindow: first } = oncePerWindow(3);
  const audited = (key: string, now: number) => first("UNSUPPORTED_MEDIA_TYPE", key, now, 60_000);
  expect(["a", "b", "c", "d", "e"].map((key) => audited(key, 0))).toEqual([
    true,
    true,
    true,
    false,
    false,
  ]);
  // Another kind has its own bound: one flood does not keep another refusal out.
  expect(first("CSRF", "d", 0, 60_000)).toBe(true);
  expect(audited("a", 30_000)).toBe(false);
  expect(audited("f", 60_000)).toBe(true);
  expect(audited("a", 60_000)).toBe(true);
});

test("what the bound leaves out is one audit row a window and kind, saying how many (probes 30c F3, 30e F7)", async () => {
  const recorded: unknown[] = [];
  const first = auditedOncePerWindow(
    { record: (event) => recorded.push(event), beforeClose: () => {} },
    "csrf.failed",
    2,
  );
  const windowMs = 60;
  const outcomes = ["a", "b", "c", "d", "e"].map((key) => first("csrf", key, 0, windowMs));
  expect(outcomes).toEqual([true, true, false, false, false]);
  // A key already audited in its window is no refusal left out by the bound.
  expect(first("csrf", "a", 1, windowMs)).toBe(false);
  expect(first("other", "x", 0, windowMs)).toBe(true);
  expect(recorded).toEqual([]);
  await Bun.sleep(windowMs * 2);
  expect(recorded).toEqual([
    {
      type: "audit.refusals_unrecorded",
      outcome: "denied",
      detail: { type: "csrf.failed", kind: "csrf", refusals: 3, seconds: 0 },
    },
  ]);
  // Nothing left out since: no row.
  await Bun.sleep(windowMs * 2);
  expect(recorded).toHaveLength(1);
});

test("CSRF failures: once per address and minute; the metric counts each", async () => {
  current = buildTestApp({ env: ROOMY });
  const cookie = "palisade_session=some-session-value";
  for (let i = 0; i < 4; i++) {
    const response = await send(current, "/api/auth/logout", {
      method: "POST",
      headers: { cookie },
      peer: "192.0.2.8",
    });
    expect(response.status).toBe(403);
  }
  expect(auditedOf(current, "csrf.failed")).toHaveLength(1);
  expect(await (await send(current, "/metrics")).text()).toContain("csrf_failures_total 4");
});

test("webhook signatures that do not verify: once per address, provider and minute; the metric counts each", async () => {
  current = buildTestApp({
    env: { ...ROOMY, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET, ...whatsappEnv(null) },
  });
  for (let i = 0; i < 3; i++) {
    const stripe = await send(current, STRIPE_WEBHOOK_PATH, {
      body: { id: "evt_1" },
      headers: { "stripe-signature": "t=1,v1=00" },
      peer: "192.0.2.9",
    });
    expect(stripe.status).toBe(400);
    const whatsapp = await send(current, WHATSAPP_PATH, {
      body: { object: "whatsapp_business_account" },
      headers: { "x-hub-signature-256": `sha256=${"0".repeat(64)}` },
      peer: "192.0.2.9",
    });
    expect(whatsapp.status).toBe(401);
  }
  const rows = auditedOf(current, "webhook.signature_failed");
  expect(rows.map((row) => JSON.parse(row.detail).provider)).toEqual(["stripe", "whatsapp"]);
  const metrics = await (await send(current, "/metrics")).text();
  expect(metrics).toMatch(/webhook_signature_failures_total\{provider="stripe"\} 3/);
  expect(metrics).toMatch(/webhook_signature_failures_total\{provider="whatsapp"\} 3/);
});

test("a stop within a window records what the bound has left out so far, over the seconds it counted (probe 30f F3)", async () => {
  const recorded: unknown[] = [];
  const atClose: (() => void)[] = [];
  const first = auditedOncePerWindow(
    { record: (event) => recorded.push(event), beforeClose: (hook) => atClose.push(hook) },
    "request.rejected",
    1,
  );
  const windowMs = 200;
  expect(["a", "b", "c"].map((key) => first("UNSUPPORTED_MEDIA_TYPE", key, 0, windowMs))).toEqual([
    true,
    false,
    false,
  ]);
  expect(atClose).toHaveLength(1);
  atClose[0]!();
  expect(recorded).toEqual([
    {
      type: "audit.refusals_unrecorded",
      outcome: "denied",
      detail: { type: "request.rejected", kind: "UNSUPPORTED_MEDIA_TYPE", refusals: 2, seconds: 1 },
    },
  ]);
  // Reported once: the window's own report does not come again.
  await Bun.sleep(windowMs * 2);
  expect(recorded).toHaveLength(1);
});

test.each([
  ["a stop", (target: TestApp) => target.services.close()],
  // Probe 51b F3: a stop signalled again skipped both.
  [
    "a stop signalled again",
    (target: TestApp) => target.services.reportUndone("the stop was signalled again"),
  ],
] as const)(
  "%s records what was held for the stop into the chain, and logs the chain's head after it",
  (_label, stop) => {
    current = buildTestApp();
    const { audit } = current.services;
    audit.beforeClose(() =>
      audit.record({
        type: "audit.refusals_unrecorded",
        outcome: "denied",
        detail: { type: "csrf.failed", kind: "csrf", refusals: 7, seconds: 12 },
      }),
    );
    const count = () =>
      (current!.db.$client.query("SELECT count(*) AS n FROM audit_events").get() as { n: number })
        .n;
    stop(current);
    const rows = current.db.$client
      .query<{ detail: string }, []>(
        "SELECT detail FROM audit_events WHERE type = 'audit.refusals_unrecorded'",
      )
      .all();
    expect(rows.map((row) => JSON.parse(row.detail))).toEqual([
      { type: "csrf.failed", kind: "csrf", refusals: 7, seconds: 12 },
    ]);
    const heads = current.logs.entries.filter((entry) => entry.msg === "audit chain head");
    expect(heads.at(-1)!.auditCount).toBe(count());
  },
);
