/**
 * The Graph client's classification of what came back, through a fetch that answers as Graph does.
 */
import { expect, test } from "bun:test";
import { createGraphClient } from "../../../src/modules/webhooks/graph-client";

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
