import { Elysia, t } from "elysia";
import { createApp } from "../src/app";
import type { ChatFeature } from "../src/modules/chat/feature";
import { settleDeferredWork } from "./deferred";
import { benchServices } from "./services";

const MESSAGE = "How do I sign up and get an API key?";

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function servicesOn(path: string) {
  return benchServices({
    databasePath: path,
    env: {
      RATE_LIMIT_PER_MINUTE: "1000000",
      RATE_LIMIT_CHAT: "1000000",
      RATE_LIMIT_BURST: "1000000",
      CHAT_DAILY_TOKEN_BUDGET: "1000000000",
    },
    level: "info",
  });
}

export async function measureChat(dir: string, requests: number, concurrency: number, rounds = 5) {
  const full = servicesOn(`${dir}/chat-full.db`);
  const app = createApp({ ...full.services, peerAddress: () => "127.0.0.1" });
  const { key } = full.services.apiKeys.create(
    { name: "bench", scopes: ["chat"], userId: null },
    "bench",
  );

  const bare = servicesOn(`${dir}/chat-bare.db`);
  const chat = bare.services.features.find((f) => f.name === "chat") as ChatFeature;
  // A turn is kept only for an owner that exists (a key not revoked): the bare app's turns are a
  // real key's too.
  const { record: bareKey } = bare.services.apiKeys.create(
    { name: "bench", scopes: ["chat"], userId: null },
    "bench",
  );
  const bareApp = new Elysia().post(
    "/api/chat",
    async ({ body }) => {
      const prepared = await chat.service.prepare({
        owner: { kind: "key", id: bareKey.id },
        message: body.message.trim(),
        requestId: "bench",
      });
      if (prepared.kind !== "ready") throw new Error(prepared.kind);
      return chat.service.complete(prepared.turn);
    },
    { body: t.Object({ message: t.String() }) },
  );

  const body = JSON.stringify({ message: MESSAGE });
  const timeApp = async (target: { handle(r: Request): Promise<Response> }, count: number) => {
    const request = () =>
      new Request("http://localhost/api/chat", {
        method: "POST",
        headers: { "content-type": "application/json", "x-api-key": key, "user-agent": "bench" },
        body,
      });
    await settleDeferredWork();
    const started = performance.now();
    let sent = 0;
    const worker = async () => {
      while (sent < count) {
        sent++;
        const response = await target.handle(request());
        if (response.status !== 200) throw new Error(`status ${response.status}`);
        await response.arrayBuffer();
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    await settleDeferredWork();
    return count / ((performance.now() - started) / 1000);
  };

  // Warm up both: JIT, Elysia's compiled handlers, the key cache.
  await timeApp(app, 500);
  await timeApp(bareApp, 500);
  const fullRates: number[] = [];
  const bareRates: number[] = [];
  for (let round = 0; round < rounds; round++) {
    bareRates.push(await timeApp(bareApp, requests));
    fullRates.push(await timeApp(app, requests));
  }
  full.close();
  bare.close();
  return { full: median(fullRates), bare: median(bareRates) };
}
