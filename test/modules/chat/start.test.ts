/**
 * The real entry point (`bun run start`, src/index.ts) as a child process: with OPENAI_API_KEY and
 * OPENAI_BASE_URL it answers `POST /api/chat` from that OpenAI-compatible server, JSON and
 * streamed; without a key it answers from the offline FAQ and never calls the server, even with
 * OPENAI_BASE_URL set.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir } from "../../support/app";
import { parseSse } from "../../support/chat";
import { type OpenAiServer, startOpenAiServer } from "../../support/openai-server";
import { type ServiceProcess, startService } from "../../support/process";

let upstream: OpenAiServer | undefined;
let service: ServiceProcess | undefined;
let dir: ReturnType<typeof tempDir> | undefined;
afterEach(async () => {
  await service?.stop();
  upstream?.stop();
  dir?.remove();
  service = upstream = dir = undefined;
});

/** Registers and logs in over HTTP; the bearer headers for the chat. */
async function signedIn(base: URL): Promise<Record<string, string>> {
  const credentials = { email: "start@example.test", password: "violet-Harbor-quantum-73!" };
  const post = (path: string) =>
    fetch(new URL(path, base), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(credentials),
    });
  expect((await post("/api/auth/register")).status).toBe(201);
  const { accessToken } = (await (await post("/api/auth/login")).json()) as {
    accessToken: string;
  };
  return { authorization: `Bearer ${accessToken}` };
}

function chat(base: URL, auth: Record<string, string>, body: unknown, accept?: string) {
  return fetch(new URL("/api/chat", base), {
    method: "POST",
    headers: { ...auth, "content-type": "application/json", ...(accept ? { accept } : {}) },
    body: JSON.stringify(body),
  });
}

describe("bun run start answers POST /api/chat", () => {
  test("from the OpenAI-compatible server at OPENAI_BASE_URL, JSON and streamed", async () => {
    upstream = await startOpenAiServer();
    dir = tempDir();
    service = await startService({
      DATABASE_PATH: join(dir.path, "openai.db"),
      OPENAI_API_KEY: upstream.apiKey,
      OPENAI_BASE_URL: upstream.url,
      OPENAI_MODEL: "llama3.2",
    });
    const auth = await signedIn(service.url);

    upstream.enqueue({
      kind: "reply",
      text: "From the model.",
      usage: { prompt: 9, completion: 3 },
    });
    const json = await chat(service.url, auth, { message: "Hello there" });
    expect(json.status).toBe(200);
    const turn = (await json.json()) as { conversationId: string; reply: string; usage: unknown };
    expect(turn.reply).toBe("From the model.");
    expect(turn.usage).toEqual({ promptTokens: 9, completionTokens: 3 });
    expect(upstream.requests[0]!.authorized).toBe(true);
    expect(upstream.requests[0]!.body.model).toBe("llama3.2");
    expect(upstream.requests[0]!.body.messages.at(-1)).toEqual({
      role: "user",
      content: "Hello there",
    });

    upstream.enqueue({ kind: "reply", chunks: ["Streamed ", "from ", "the model."] });
    const streamed = await chat(
      service.url,
      auth,
      { message: "Stream please", conversationId: turn.conversationId },
      "text/event-stream",
    );
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const events = parseSse(await streamed.text());
    expect(events.map((e) => e.event)).toEqual(["message", "message", "message", "done"]);
    expect(events.slice(0, 3).map((e) => (e.data as { delta: string }).delta)).toEqual([
      "Streamed ",
      "from ",
      "the model.",
    ]);
    expect((events[3]!.data as { conversationId: string }).conversationId).toBe(
      turn.conversationId,
    );
    expect(upstream.requests[1]!.stream).toBe(true);
    // The second turn carried the first as context.
    expect(upstream.requests[1]!.body.messages).toContainEqual({
      role: "assistant",
      content: "From the model.",
    });
    expect(service.stdout()).not.toContain(upstream.apiKey);
  }, 30_000);

  test("without OPENAI_API_KEY, from the offline FAQ, even with OPENAI_BASE_URL set", async () => {
    upstream = await startOpenAiServer();
    dir = tempDir();
    service = await startService({
      DATABASE_PATH: join(dir.path, "offline.db"),
      OPENAI_BASE_URL: upstream.url,
    });
    const auth = await signedIn(service.url);
    const json = await chat(service.url, auth, { message: "How do I connect OpenAI?" });
    expect(json.status).toBe(200);
    expect(((await json.json()) as { reply: string }).reply).toContain("OPENAI_API_KEY");
    const streamed = await chat(
      service.url,
      auth,
      { message: "How do I connect OpenAI?" },
      "text/event-stream",
    );
    const events = parseSse(await streamed.text());
    expect(events.at(-1)!.event).toBe("done");
    const reply = events
      .filter((e) => e.event === "message")
      .map((e) => (e.data as { delta: string }).delta)
      .join("");
    expect(reply).toContain("OPENAI_API_KEY");
    expect(upstream.requests).toHaveLength(0);
  }, 30_000);
});
