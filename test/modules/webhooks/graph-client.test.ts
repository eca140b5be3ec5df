/**
 * The Graph client's classification of what came back, through a fetch that answers as Graph does.
 */
import { expect, test } from "bun:test";
import { createGraphClient, GRAPH_ANSWER_BYTES } from "../../../src/modules/webhooks/graph-client";

const TOKEN = "EAAGm0PX4ZCpsBAKZCtoken0123456789";

const answering = (status: number, body: unknown) =>
  createGraphClient({
    apiUrl: "http://graph.invalid/v21.0",
    accessToken: TOKEN,
    fetch: (async () => Response.json(body, { status })) as unknown as typeof fetch,
  });

const message = { phoneNumberId: "106540352242922", to: "16505551234", body: "hi" };

test("a refused token (401 or code 190) is transient and says WHATSAPP_ACCESS_TOKEN, never the token (probe 27g F6)", async () => {
  for (const [status, code] of [
    [401, 190],
    [400, 190],
  ] as const) {
    const outcome = await answering(status, {
      error: { message: `Invalid OAuth access token - ${TOKEN}`, type: "OAuthException", code },
    }).sendText(message);
    expect(outcome.kind).toBe("transient");
    const reason = (outcome as { reason: string }).reason;
    expect(reason).toStartWith("access token refused (WHATSAPP_ACCESS_TOKEN)");
    expect(reason).not.toContain(TOKEN);
    expect(reason).toContain("[redacted]");
  }
});

test("any other refusal that quotes the token keeps it out of the reason", async () => {
  const outcome = await answering(400, {
    error: { message: `(#131026) Message undeliverable ${TOKEN}`, code: 131026 },
  }).sendText(message);
  expect(outcome.kind).toBe("permanent");
  expect((outcome as { reason: string }).reason).not.toContain(TOKEN);
});

test("a token longer than the kept text, or quoted in another letter case, leaves nothing of itself (probe 27h F1, F2)", async () => {
  const long = `EAAG${"x7Zq".repeat(55)}`;
  const client = (text: string) =>
    createGraphClient({
      apiUrl: "http://graph.invalid/v21.0",
      accessToken: long,
      fetch: (async () =>
        Response.json(
          { error: { message: text, code: 100 } },
          { status: 400 },
        )) as unknown as typeof fetch,
    });
  for (const text of [
    `bad token ${long}`,
    `${"a".repeat(150)} ${long}`,
    `bad token ${long.toLowerCase()}`,
    `bad token ${long.toUpperCase()}`,
  ]) {
    const reason = ((await client(text).sendText(message)) as { reason: string }).reason;
    expect(reason).not.toContain(long.slice(0, 12));
    expect(reason.toLowerCase()).not.toContain(long.slice(4, 16).toLowerCase());
  }
});

test("an error text quoting another configured secret or a credential keeps it out of the reason (probe 29c F4)", async () => {
  const appSecret = "whatsapp-app-secret-0123456789abcdef";
  const stripeKey = "sk_test_51Hprobe29cSecretKey0123456789";
  const client = (text: string) =>
    createGraphClient({
      apiUrl: "http://graph.invalid/v21.0",
      accessToken: TOKEN,
      otherSecrets: [appSecret, stripeKey],
      fetch: (async () =>
        Response.json(
          { error: { message: text, code: 100 } },
          { status: 400 },
        )) as unknown as typeof fetch,
    });
  for (const [text, secret] of [
    [`echo: app secret ${appSecret}`, appSecret],
    [`echo: ${encodeURIComponent(appSecret.toUpperCase())}`, appSecret.toUpperCase()],
    [`echo: key=${stripeKey}`, stripeKey],
    [`upstream said pal_live_${"A".repeat(40)}`, `pal_live_${"A".repeat(40)}`],
  ] as const) {
    const reason = ((await client(text).sendText(message)) as { reason: string }).reason;
    expect(reason).toStartWith("graph 400 code 100: ");
    expect(reason).not.toContain(secret.slice(0, 20));
    expect(reason).not.toContain(encodeURIComponent(secret).slice(0, 20));
  }
  // Text that holds no secret is kept as Graph wrote it.
  const plain = await client("(#100) Invalid parameter").sendText(message);
  expect((plain as { reason: string }).reason).toBe("graph 400 code 100: (#100) Invalid parameter");
});

test("an answer without end is read no further than its bound: accepted as sent, or refused by its status alone (probe 54a F1's class)", async () => {
  for (const status of [200, 503, 400]) {
    let pulled = 0;
    let cancelled = false;
    const block = new Uint8Array(64 * 1024).fill(97);
    const client = createGraphClient({
      apiUrl: "http://graph.invalid/v21.0",
      accessToken: TOKEN,
      fetch: (async () =>
        new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              pulled += block.byteLength;
              // An end far past the bound, so a reader without one ends too.
              if (pulled > 256 * 1024 * 1024) controller.close();
              else controller.enqueue(block);
            },
            cancel() {
              cancelled = true;
            },
          }),
          { status, headers: { "content-type": "application/json" } },
        )) as unknown as typeof fetch,
    });
    const outcome = await client.sendText(message);
    expect(cancelled).toBe(true);
    expect(pulled).toBeLessThanOrEqual(GRAPH_ANSWER_BYTES + 4 * block.byteLength);
    // Graph accepted it (2xx): sent, with no id to match status callbacks by; never sent again.
    if (status === 200) expect(outcome).toEqual({ kind: "sent", messageId: "" });
    else if (status === 503) expect(outcome).toEqual({ kind: "transient", reason: "graph 503" });
    else expect(outcome).toEqual({ kind: "permanent", reason: "graph 400" });
  }
});

test("an error text quoting the recipient's number or the text sent keeps both out of the reason, in any spelling (probe 59b F2)", async () => {
  const sent = {
    phoneNumberId: "106540352242922",
    to: "16505551234",
    body: "Your order 4471 ships on Monday; reply STOP to opt out.",
  };
  for (const [quoted, kept] of [
    [
      "(#131026) Message undeliverable to 16505551234",
      "(#131026) Message undeliverable to [number]",
    ],
    ["to=+1 650-555-1234 failed", "to=[number] failed"],
    ["to (650) 555 1234, also 447700900123", "to [number], also [number]"],
    [
      "text='Your order 4471 ships on Monday; reply STOP to opt out.' refused",
      "text='[text]' refused",
    ],
    ["body starts 'Your order 4471 ships…' (cut)", "body starts '[text]…' (cut)"],
    ["phone number 106540352242922 not registered", "phone number 106540352242922 not registered"],
    ["(#100) Param text['body'] is invalid", "(#100) Param text['body'] is invalid"],
  ] as const) {
    const outcome = await answering(400, { error: { message: quoted, code: 131026 } }).sendText(
      sent,
    );
    expect((outcome as { reason: string }).reason).toBe(`graph 400 code 131026: ${kept}`);
  }
});

test("a 408 or 425 (a timeout, or too early: nothing was refused) is transient, as a 429 or a 5xx is; another 4xx is permanent (probe 84g F1)", async () => {
  for (const status of [408, 425, 429, 500, 503]) {
    const outcome = await answering(status, { error: { message: "try again" } }).sendText(message);
    expect({ status, kind: outcome.kind }).toEqual({ status, kind: "transient" });
  }
  for (const status of [400, 403, 404, 409, 413, 422]) {
    const outcome = await answering(status, { error: { message: "no" } }).sendText(message);
    expect({ status, kind: outcome.kind }).toEqual({ status, kind: "permanent" });
  }
});

test("a Retry-After given as an HTTP date is waited for as the seconds would be (probe 84i F2)", async () => {
  const inTwoMinutes = new Date(Date.now() + 120_000).toUTCString();
  const client = createGraphClient({
    apiUrl: "http://graph.invalid/v21.0",
    accessToken: TOKEN,
    fetch: (async () =>
      Response.json(
        { error: { message: "busy", code: 2 } },
        { status: 503, headers: { "retry-after": inTwoMinutes } },
      )) as unknown as typeof fetch,
  });
  const outcome = (await client.sendText(message)) as { kind: string; retryAfterMs?: number };
  expect(outcome.kind).toBe("transient");
  expect(outcome.retryAfterMs).toBeGreaterThan(110_000);
  expect(outcome.retryAfterMs).toBeLessThanOrEqual(120_000);
});
