/**
 * The app with its WhatsApp webhook on, pointed at a local Graph server, with a scripted chat and a
 * manual clock: what the outbox worker's tests drive (`worker.drain()` runs it once, at once).
 */
import type { WhatsAppWebhook } from "../../src/modules/webhooks/whatsapp";
import type { Services } from "../../src/services";
import { buildTestApp, type TestApp } from "./app";
import { ManualClock } from "./clock";
import { type GraphServer, startGraphServer } from "./graph-server";
import { anotherInstance } from "./instance";
import { ScriptedChat, whatsappEnv } from "./whatsapp";

export interface OutboxSetup {
  target: TestApp;
  graph: GraphServer;
  chat: ScriptedChat;
  clock: ManualClock;
  worker: WhatsAppWebhook["worker"];
}

export function whatsappOf(services: Services): WhatsAppWebhook {
  return services.features.find((f) => f.name === "whatsapp") as WhatsAppWebhook;
}

/** Builds it; what to close is pushed onto `cleanups`. */
export function outboxSetup(
  cleanups: (() => void)[],
  env: Record<string, string> = {},
  outbox = {},
): OutboxSetup {
  const graph = startGraphServer();
  cleanups.push(() => graph.close());
  const chat = new ScriptedChat();
  const clock = new ManualClock();
  const target = buildTestApp({
    env: whatsappEnv(graph, env),
    clock,
    whatsapp: { chat, outbox: { retryBaseMs: 1000, ...outbox } },
  });
  cleanups.push(() => target.close());
  return { target, graph, chat, clock, worker: whatsappOf(target.services).worker };
}

/**
 * Another process on the file, on the same clock (the rows' times are the test clock's), runs its
 * worker once: what a stop leaves to the next process. Returns that process's chat (its turns).
 */
export async function drainInNextProcess(
  cleanups: (() => void)[],
  { target, graph, clock }: Pick<OutboxSetup, "target" | "graph" | "clock">,
): Promise<ScriptedChat> {
  const chat = new ScriptedChat();
  const next = anotherInstance(target, { clock, env: whatsappEnv(graph), whatsapp: { chat } });
  cleanups.push(() => next.close());
  await whatsappOf(next.services).worker.drain();
  return chat;
}
