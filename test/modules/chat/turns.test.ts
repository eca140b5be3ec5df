/**
 * `ChatTurns.converse`, what the WhatsApp webhook calls: the same storage, context, budget and
 * metrics as POST /api/chat, outcomes as values (reply, not_found, over_budget, refused), upstream
 * failures thrown as UpstreamFailure.
 */
import { afterEach, expect, test } from "bun:test";
import { chatConversations, chatMessages, chatReservations } from "../../../src/db/schema";
import type { ChatFeature } from "../../../src/modules/chat/feature";
import { buildTestApp, type TestApp } from "../../support/app";
import { failingProvider, recordingProvider, UpstreamFailure } from "../../support/chat";

let target: TestApp | undefined;
afterEach(() => target?.close());

const turnsOf = (app: TestApp) =>
  (app.services.features.find((f) => f.name === "chat") as ChatFeature).turns;

test("a WhatsApp sender's turns: a reply, then a continued conversation with context", async () => {
  const provider = recordingProvider();
  target = buildTestApp({ chatProvider: provider });
  const turns = turnsOf(target);
  const owner = { kind: "whatsapp" as const, id: "hmac-of-the-number" };
  const first = await turns.converse({ owner, message: "How do I sign up?", requestId: "r1" });
  expect(first.kind).toBe("reply");
  if (first.kind !== "reply") return;
  expect(first.turn.reply).toContain("register");
  const second = await turns.converse({
    owner,
    message: "and payments?",
    conversationId: first.turn.conversationId,
    requestId: "r2",
  });
  expect(second.kind).toBe("reply");
  expect(provider.calls[1]!.map((m) => m.role)).toEqual(["system", "user", "assistant", "user"]);
  expect(target.db.select().from(chatConversations).get()).toMatchObject({
    ownerKind: "whatsapp",
    ownerId: "hmac-of-the-number",
  });

  // Another owner (a user with the same id string) cannot continue it.
  const other = await turns.converse({
    owner: { kind: "user", id: "hmac-of-the-number" },
    message: "hi",
    conversationId: first.turn.conversationId,
    requestId: "r3",
  });
  expect(other).toEqual({ kind: "not_found" });
});

test("over the budget is a value with the seconds to wait; upstream failures are thrown", async () => {
  target = buildTestApp({ env: { CHAT_DAILY_TOKEN_BUDGET: "5" } });
  const owner = { kind: "whatsapp" as const, id: "sender" };
  const outcome = await turnsOf(target).converse({ owner, message: "hello", requestId: "r" });
  expect(outcome.kind).toBe("over_budget");
  if (outcome.kind === "over_budget") expect(outcome.retryAfterSeconds).toBeGreaterThan(0);
  target.close();

  target = buildTestApp({
    chatProvider: failingProvider(new UpstreamFailure("unavailable", "circuit open", 30)),
  });
  const failed = turnsOf(target).converse({ owner, message: "hello", requestId: "r" });
  await expect(failed).rejects.toBeInstanceOf(UpstreamFailure);
});

test("a message the upstream refuses for what it says is a value, not a failure to retry; one refused for its size is thrown; nothing is kept or held", async () => {
  const ofContent = new UpstreamFailure("refused", "upstream refused the request (status 400)");
  ofContent.ofContent = true;
  target = buildTestApp({ chatProvider: failingProvider(ofContent) });
  const owner = { kind: "whatsapp" as const, id: "sender" };
  const outcome = await turnsOf(target).converse({ owner, message: "hello", requestId: "r" });
  expect(outcome).toEqual({ kind: "refused" });
  expect(target.db.select().from(chatMessages).all()).toEqual([]);
  expect(target.db.select().from(chatReservations).all()).toEqual([]);
  target.close();

  // A 413, a 422, a context too long for the model: maybe the deployment's, retried by the caller.
  const ofSize = new UpstreamFailure("refused", "upstream refused the request (status 413)");
  target = buildTestApp({ chatProvider: failingProvider(ofSize) });
  const failed = turnsOf(target).converse({ owner, message: "hello", requestId: "r" });
  await expect(failed).rejects.toBeInstanceOf(UpstreamFailure);
  expect(target.db.select().from(chatReservations).all()).toEqual([]);
});
