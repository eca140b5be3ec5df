/**
 * The WhatsApp webhook's checks: Meta's subscription handshake (GET) and the signature over the raw
 * body (POST), with its rotation, audit and metric. Nothing unsigned reaches the outbox.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { metricValue } from "../../support/payments";
import { waitFor } from "../../support/wait";
import {
  deliver,
  notification,
  ScriptedChat,
  sign,
  WA_APP_SECRET,
  WA_PREVIOUS_SECRET,
  WA_VERIFY_TOKEN,
  WHATSAPP_PATH,
  whatsappEnv,
} from "../../support/whatsapp";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function build(env: Record<string, string> = whatsappEnv(null)) {
  current = buildTestApp({ env, whatsapp: { chat: new ScriptedChat() } });
  return current;
}

const verifyQuery = (params: Record<string, string>) =>
  `${WHATSAPP_PATH}?${new URLSearchParams(params).toString()}`;

const outboxCount = (target: TestApp) =>
  target.db.$client.query<{ n: number }, []>("SELECT count(*) AS n FROM whatsapp_outbox").get()!.n;

async function expectProblem(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(response.headers.get("content-type")).toStartWith("application/problem+json");
  const body = (await response.json()) as { code: string; detail: string };
  expect(body.code).toBe(code);
  return body;
}

describe("GET /webhooks/whatsapp (subscription check)", () => {
  test("the right token echoes the challenge, alone, as text/plain", async () => {
    const target = build();
    const response = await send(
      target,
      verifyQuery({
        "hub.mode": "subscribe",
        "hub.verify_token": WA_VERIFY_TOKEN,
        "hub.challenge": "1158201444",
      }),
    );
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toStartWith("text/plain");
    expect(response.headers.get("x-content-type-options")).toBe("nosniff");
    expect(await response.text()).toBe("1158201444");
  });

  test("a wrong token, a missing mode, another mode or a repeated parameter is 403", async () => {
    const target = build();
    const challenge = "1158201444";
    const cases: Record<string, string>[] = [
      { "hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": challenge },
      {
        "hub.mode": "subscribe",
        "hub.verify_token": `${WA_VERIFY_TOKEN}x`,
        "hub.challenge": challenge,
      },
      { "hub.verify_token": WA_VERIFY_TOKEN, "hub.challenge": challenge },
      {
        "hub.mode": "unsubscribe",
        "hub.verify_token": WA_VERIFY_TOKEN,
        "hub.challenge": challenge,
      },
      { "hub.mode": "subscribe", "hub.challenge": challenge },
      { "hub.mode": "subscribe", "hub.verify_token": WA_VERIFY_TOKEN },
    ];
    for (const params of cases) {
      const body = await expectProblem(await send(target, verifyQuery(params)), 403, "FORBIDDEN");
      expect(body.detail).not.toContain(challenge);
    }
    // The last of two values must not win (Elysia's own query parsing keeps the last).
    const repeated = `${verifyQuery({ "hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": challenge })}&hub.verify_token=${WA_VERIFY_TOKEN}`;
    await expectProblem(await send(target, repeated), 403, "FORBIDDEN");
  });

  test("a challenge that is not a short token is not echoed", async () => {
    const target = build();
    for (const challenge of ["<script>alert(1)</script>", "a".repeat(129), "x y"]) {
      const response = await send(
        target,
        verifyQuery({
          "hub.mode": "subscribe",
          "hub.verify_token": WA_VERIFY_TOKEN,
          "hub.challenge": challenge,
        }),
      );
      await expectProblem(response, 403, "FORBIDDEN");
    }
  });

  test("with no WHATSAPP_VERIFY_TOKEN configured nothing verifies, not even an empty token", async () => {
    const target = build({ WHATSAPP_APP_SECRET: WA_APP_SECRET });
    for (const token of ["", "undefined", "null"]) {
      const response = await send(
        target,
        verifyQuery({ "hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42" }),
      );
      await expectProblem(response, 403, "FORBIDDEN");
    }
  });
});

describe("POST /webhooks/whatsapp (signature)", () => {
  const payload = notification({
    messages: [{ id: "wamid.SIG1", from: "16505551234", text: "hi" }],
  });

  test("a correctly signed notification is acknowledged and accepted", async () => {
    const target = build();
    const response = await deliver(target, payload);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ received: true, accepted: 1 });
    expect(outboxCount(target)).toBe(1);
  });

  test("a bad signature, a missing header and a wrong prefix are 401 BAD_SIGNATURE, audited and counted", async () => {
    const target = build();
    const body = JSON.stringify(payload);
    const wrongSecret = sign(body, "not-the-app-secret");
    const hex = sign(body).slice("sha256=".length);
    const attempts: [string | null, string][] = [
      [wrongSecret, "mismatch"],
      [null, "missing"],
      [`sha1=${hex}`, "malformed"],
      [hex, "malformed"],
      [`sha256=${hex.slice(0, 63)}`, "malformed"],
      [`sha256=${"0".repeat(64)}`, "mismatch"],
      // The prefix is exactly `sha256=`, as documented and as Meta sends it.
      [`SHA256=${hex}`, "malformed"],
      [`Sha256=${hex}`, "malformed"],
      [`sha256 =${hex}`, "malformed"],
    ];
    // Each from its own address: one address's failures are audited once a minute
    // (audit/once-per-window; refusal-audit-bound.test.ts).
    for (const [i, [signature]] of attempts.entries()) {
      const peer = `192.0.2.${100 + i}`;
      await expectProblem(await deliver(target, body, { signature, peer }), 401, "BAD_SIGNATURE");
    }
    expect(outboxCount(target)).toBe(0);
    target.services.audit.flush();
    const rows = target.db.$client
      .query<{ detail: string; outcome: string }, []>(
        "SELECT detail, outcome FROM audit_events WHERE type = 'webhook.signature_failed' ORDER BY id",
      )
      .all();
    expect(rows.map((row) => JSON.parse(row.detail).reason)).toEqual(attempts.map(([, r]) => r));
    expect(rows.every((row) => JSON.parse(row.detail).provider === "whatsapp")).toBe(true);
    expect(rows.every((row) => row.outcome === "denied")).toBe(true);
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain(
      `webhook_signature_failures_total{provider="whatsapp"} ${attempts.length}`,
    );
  });

  test("the digest's hex is read in either case after the lowercase prefix", async () => {
    const target = build();
    const body = JSON.stringify(payload);
    const hex = sign(body).slice("sha256=".length);
    const response = await deliver(target, body, { signature: `sha256=${hex.toUpperCase()}` });
    expect(response.status).toBe(200);
    expect(outboxCount(target)).toBe(1);
  });

  test("a tampered body with the original's valid header is refused", async () => {
    const target = build();
    const original = JSON.stringify(payload);
    const header = sign(original);
    const tampered = original.replace("hi", "pay me");
    await expectProblem(
      await deliver(target, tampered, { signature: header }),
      401,
      "BAD_SIGNATURE",
    );
    // Whitespace is bytes too: the signature is over what was sent, not the parsed JSON.
    const reformatted = JSON.stringify(payload, null, 2);
    await expectProblem(
      await deliver(target, reformatted, { signature: header }),
      401,
      "BAD_SIGNATURE",
    );
    expect(outboxCount(target)).toBe(0);
  });

  test("the signature covers the raw bytes: invalid UTF-8 that decodes to the signed text is refused", async () => {
    const target = build();
    // The signed body carries U+FFFD; the sent one carries a lone 0xFF byte, which a decoder turns
    // into U+FFFD: equal as text, different as bytes.
    const text = JSON.stringify(
      notification({ messages: [{ id: "wamid.UTF", from: "16505551234", text: "a\uFFFDb" }] }),
    );
    const signed = new TextEncoder().encode(text);
    const marker = signed.indexOf(0xef);
    const sent = new Uint8Array([...signed.slice(0, marker), 0xff, ...signed.slice(marker + 3)]);
    expect(new TextDecoder().decode(sent)).toBe(text);
    const response = await target.app.handle(
      new Request(`http://localhost${WHATSAPP_PATH}`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-hub-signature-256": sign(signed) },
        body: sent,
      }),
    );
    await expectProblem(response, 401, "BAD_SIGNATURE");
    // The exact signed bytes pass.
    const genuine = await target.app.handle(
      new Request(`http://localhost${WHATSAPP_PATH}`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-hub-signature-256": sign(signed) },
        body: signed,
      }),
    );
    expect(genuine.status).toBe(200);
  });

  test("during a rotation the previous secret verifies too; without it configured, it does not", async () => {
    const rotated = build(whatsappEnv(null, { WHATSAPP_APP_SECRET_PREVIOUS: WA_PREVIOUS_SECRET }));
    const first = notification({ messages: [{ id: "wamid.ROT1", from: "16505551234" }] });
    const second = notification({ messages: [{ id: "wamid.ROT2", from: "16505551234" }] });
    expect((await deliver(rotated, first, { secret: WA_PREVIOUS_SECRET })).status).toBe(200);
    expect((await deliver(rotated, second, { secret: WA_APP_SECRET })).status).toBe(200);
    expect(outboxCount(rotated)).toBe(2);
    rotated.close();

    const after = build();
    const third = notification({ messages: [{ id: "wamid.ROT3", from: "16505551234" }] });
    await expectProblem(
      await deliver(after, third, { secret: WA_PREVIOUS_SECRET }),
      401,
      "BAD_SIGNATURE",
    );
  });

  test("with no app secret configured the endpoint answers 501 NOT_CONFIGURED, not to be retried, and accepts nothing (probe 43c F1)", async () => {
    const target = build({});
    const response = await deliver(target, payload);
    expect(response.headers.get("retry-after")).toBeNull();
    const requestId = response.headers.get("x-request-id");
    const body = await expectProblem(response, 501, "NOT_CONFIGURED");
    expect(body).toMatchObject({
      type: "urn:palisade:problem:not-configured",
      status: 501,
      detail: "WhatsApp is not configured (WHATSAPP_APP_SECRET is not set).",
      requestId,
    });
    expect(outboxCount(target)).toBe(0);
    // The access line is written once the response is sent: a warning, not an error.
    const line = await waitFor(
      () => target.logs.entries.find((entry) => entry.requestId === requestId),
      { what: "the access line" },
    );
    expect(line).toMatchObject({ level: "warn", route: WHATSAPP_PATH, status: 501 });
  });

  test("the webhooks body limit and content-type checks still apply before the signature", async () => {
    const target = build();
    const big = JSON.stringify({
      object: "whatsapp_business_account",
      entry: [],
      pad: "x".repeat(300 * 1024),
    });
    await expectProblem(await deliver(target, big), 413, "PAYLOAD_TOO_LARGE");
    const plain = await target.app.handle(
      new Request(`http://localhost${WHATSAPP_PATH}`, {
        method: "POST",
        headers: { "content-type": "text/plain", "x-hub-signature-256": sign("x") },
        body: "x",
      }),
    );
    await expectProblem(plain, 415, "UNSUPPORTED_MEDIA_TYPE");
    // Not the 32 KiB default: a 100 KiB signed notification is within the webhooks class.
    const padded = { ...payload, pad: "y".repeat(100 * 1024) };
    expect((await deliver(target, padded)).status).toBe(200);
  });

  test("a signed body that is not a WhatsApp notification is 400; another object is acknowledged and ignored", async () => {
    const target = build();
    await expectProblem(
      await deliver(target, { object: "whatsapp_business_account", entry: "no" }),
      400,
      "BAD_REQUEST",
    );
    await expectProblem(await deliver(target, [1, 2, 3]), 400, "BAD_REQUEST");
    const page = await deliver(target, { object: "page", entry: [] });
    expect(page.status).toBe(200);
    expect(await page.json()).toMatchObject({ accepted: 0, ignored: 1 });
    expect(outboxCount(target)).toBe(0);
  });
});

describe("a body is parsed only once its signature verifies (probe 89d F5)", () => {
  test("unsigned, or signed with another secret, whatever it holds is 401 BAD_SIGNATURE, never parsed first; signed and not JSON is 400", async () => {
    const target = build();
    const nested = `${"[".repeat(30)}${"]".repeat(30)}`;
    const bodies = [
      // 87,000 values in 261 KB: parsed first, ~15 ms of the event loop before its 401.
      `[${Array.from({ length: 2900 }, () => nested).join(",")}]`,
      // Deeper than any route takes: it was 422 before its signature was looked at.
      `{"object":${"[".repeat(100)}${"]".repeat(100)}}`,
      "not json at all",
    ];
    for (const body of bodies) {
      for (const signature of [null, sign(body, "another-secret-0123456789abcdef")]) {
        const response = await deliver(target, body, { signature, peer: "203.0.113.77" });
        expect(response.status).toBe(401);
        expect(((await response.json()) as { code: string }).code).toBe("BAD_SIGNATURE");
      }
    }
    const signedGarbage = await deliver(target, "not json at all", { peer: "203.0.113.78" });
    expect(signedGarbage.status).toBe(400);
    expect(((await signedGarbage.json()) as { code: string }).code).toBe("MALFORMED_BODY");
    expect(outboxCount(target)).toBe(0);
    // Verified and refused: failed, as a signed body of the wrong shape is (probe 90c F1).
    expect(
      await metricValue(target, "webhook_events_total", {
        provider: "whatsapp",
        outcome: "failed",
      }),
    ).toBe(1);
  });
});
