/**
 * WhatsApp webhook throughput: the signature check alone (HMAC-SHA256 over a typical 1 KiB
 * notification, constant-time compare), and verified deliveries through the whole chain in process
 * (`app.handle`, 32 in flight): every defence, the signature, the sender limit, and the one
 * transaction that writes the dedupe record and the outbox row — each delivery a new message.
 * Redeliveries (a message id already seen) are measured too: they stop at the dedupe look-up.
 */
import { createHmac } from "node:crypto";
import { createApp } from "../src/app";
import type { ChatTurns } from "../src/modules/chat/contract";
import { verifyHubSignature } from "../src/modules/webhooks/whatsapp-crypto";
import { settleDeferredWork } from "./deferred";
import { benchServices } from "./services";

const SECRET = "bench-whatsapp-app-secret-0123456789";

// Sent now: the webhook ignores a message older than OLDEST_MESSAGE_MS, and answers 200 all the same.
function payload(id: string, from: string, timestamp = Math.floor(Date.now() / 1000)) {
  return JSON.stringify({
    object: "whatsapp_business_account",
    entry: [
      {
        id: "102290129340398",
        changes: [
          {
            field: "messages",
            value: {
              messaging_product: "whatsapp",
              metadata: { display_phone_number: "15550783881", phone_number_id: "106540352242922" },
              contacts: [{ profile: { name: "Kerry Fisher" }, wa_id: from }],
              messages: [
                {
                  from,
                  id,
                  timestamp: String(timestamp),
                  type: "text",
                  text: {
                    body: "Hello! I'd like to know where my order is; it was due yesterday. ".repeat(
                      8,
                    ),
                  },
                },
              ],
            },
          },
        ],
      },
    ],
  });
}

const sign = (body: string) => `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`;

async function inFlight(total: number, concurrency: number, run: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await run(next++);
    }),
  );
}

export async function measureWhatsApp(dir: string, iterations: number) {
  const body = new TextEncoder().encode(payload("wamid.BENCH", "16505551234"));
  const header = sign(payload("wamid.BENCH", "16505551234"));
  const secrets = { current: SECRET, previous: null };
  for (let i = 0; i < 1000; i++) verifyHubSignature(header, body, secrets);
  let started = performance.now();
  const verifications = iterations * 4;
  for (let i = 0; i < verifications; i++) verifyHubSignature(header, body, secrets);
  const verifyPerSecond = verifications / ((performance.now() - started) / 1000);

  const chat: ChatTurns = { converse: async () => ({ kind: "not_found" }) };
  // No access token: the worker does not run, so only the webhook's own work is measured.
  const bench = benchServices({
    databasePath: `${dir}/whatsapp.db`,
    env: {
      WHATSAPP_APP_SECRET: SECRET,
      RATE_LIMIT_PER_MINUTE: "1000000",
      RATE_LIMIT_WEBHOOKS: "1000000",
      RATE_LIMIT_BURST: "1000000",
      RATE_LIMIT_WHATSAPP_SENDER: "1000000",
    },
    options: { whatsapp: { chat } },
  });
  const { db, services } = bench;
  const app = createApp({ ...services, peerAddress: () => "31.13.64.1" });
  const bodies = Array.from({ length: iterations }, (_, i) =>
    payload(`wamid.HBgL${String(i).padStart(10, "0")}`, `1650${String(i % 5000).padStart(7, "0")}`),
  );
  const deliver = async (text: string) => {
    const response = await app.handle(
      new Request("http://localhost/webhooks/whatsapp", {
        method: "POST",
        headers: { "content-type": "application/json", "x-hub-signature-256": sign(text) },
        body: text,
      }),
    );
    if (response.status !== 200) throw new Error(`delivery answered ${response.status}`);
    await response.arrayBuffer();
  };
  await settleDeferredWork();
  started = performance.now();
  await inFlight(iterations, 32, (i) => deliver(bodies[i]!));
  await settleDeferredWork();
  const deliveriesPerSecond = iterations / ((performance.now() - started) / 1000);
  started = performance.now();
  await inFlight(iterations, 32, (i) => deliver(bodies[i]!));
  await settleDeferredWork();
  const redeliveriesPerSecond = iterations / ((performance.now() - started) / 1000);
  const rows = db.$client
    .query<{ n: number }, []>("SELECT count(*) AS n FROM whatsapp_outbox")
    .get()!.n;
  bench.close();
  if (rows !== iterations) throw new Error(`expected ${iterations} outbox rows, found ${rows}`);
  return { verifyPerSecond, deliveriesPerSecond, redeliveriesPerSecond };
}
