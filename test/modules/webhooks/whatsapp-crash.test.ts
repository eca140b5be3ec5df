/**
 * Crash safety with the real entry point (`src/index.ts`) as a child process: a message
 * acknowledged with 200 and not yet answered survives a SIGKILL, and the restarted service on the
 * same file sends exactly one reply — the one stored before the crash.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { join } from "node:path";
import { tempDir } from "../../support/app";
import { startGraphServer } from "../../support/graph-server";
import { type ServiceProcess, startService } from "../../support/process";
import { deliver, notification, whatsappEnv } from "../../support/whatsapp";

interface OutboxState {
  state: string;
  attempts: number;
  lease_owner: string | null;
  reply: string | null;
}

function outboxRow(path: string): OutboxState | null {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .query<OutboxState, []>("SELECT state, attempts, lease_owner, reply FROM whatsapp_outbox")
      .get();
  } finally {
    db.close();
  }
}

async function until<T>(what: string, read: () => T | null | undefined, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = read();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

test("SIGKILL between the acknowledgement and the reply, then a restart: exactly one reply", async () => {
  const dir = tempDir();
  const graph = startGraphServer();
  const services: ServiceProcess[] = [];
  try {
    const databasePath = join(dir.path, "whatsapp.db");
    const env = { DATABASE_PATH: databasePath, LOG_LEVEL: "info", ...whatsappEnv(graph) };
    // Graph fails the first send: the reply is stored and owed when the process dies.
    graph.failNext({ status: 500 });
    const first = await startService(env);
    services.push(first);

    const response = await deliver(
      first.url,
      notification({ messages: [{ id: "wamid.CRASH1", from: "16505551234", text: "hello" }] }),
    );
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ accepted: 1 });

    // After the failed attempt, the row is pending, unleased, its reply stored; the next attempt
    // is a backoff (about a second) away. Kill the process there.
    const owed = await until("the failed first attempt", () => {
      const row = outboxRow(databasePath);
      return row && row.attempts === 1 && row.lease_owner === null ? row : null;
    });
    expect(owed.state).toBe("pending");
    expect(owed.reply).not.toBeNull();
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    expect(graph.sent).toHaveLength(0);
    expect(graph.received.map((r) => r.status)).toEqual([500]);

    const second = await startService(env);
    services.push(second);
    await graph.waitForSent(1, 10_000);
    // Long enough for a second send to show if one were coming (several polls and backoffs).
    await Bun.sleep(2500);
    expect(graph.sent).toHaveLength(1);
    expect(graph.sent[0]!.to).toBe("16505551234");
    // The stored reply was resent as it was, not written again.
    expect(graph.sent[0]!.body).toBe(owed.reply!);
    expect(outboxRow(databasePath)).toMatchObject({
      state: "sent",
      attempts: 2,
      lease_owner: null,
    });
    // A redelivery of the same message after the restart changes nothing.
    const again = await deliver(
      second.url,
      notification({ messages: [{ id: "wamid.CRASH1", from: "16505551234", text: "hello" }] }),
    );
    expect(await again.json()).toMatchObject({ accepted: 0, duplicates: 1 });
    await Bun.sleep(300);
    expect(graph.received).toHaveLength(2);
    expect(await second.stop("SIGTERM")).toBe(0);
  } finally {
    for (const service of services) service.proc.kill("SIGKILL");
    graph.close();
    dir.remove();
  }
}, 40_000);

test("SIGKILL right after the acknowledgement, before any attempt: the restart answers it once", async () => {
  const dir = tempDir();
  const graph = startGraphServer();
  const services: ServiceProcess[] = [];
  try {
    const databasePath = join(dir.path, "whatsapp.db");
    // No access token in the first run: the message is accepted and kept, no worker runs.
    const { WHATSAPP_ACCESS_TOKEN: _token, ...withoutToken } = whatsappEnv(graph);
    const first = await startService({
      DATABASE_PATH: databasePath,
      LOG_LEVEL: "info",
      ...withoutToken,
    });
    services.push(first);
    const response = await deliver(
      first.url,
      notification({ messages: [{ id: "wamid.CRASH2", from: "16505550000", type: "image" }] }),
    );
    expect(response.status).toBe(200);
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    expect(outboxRow(databasePath)).toMatchObject({ state: "pending", attempts: 0 });

    const second = await startService({
      DATABASE_PATH: databasePath,
      LOG_LEVEL: "info",
      ...whatsappEnv(graph),
    });
    services.push(second);
    await graph.waitForSent(1, 10_000);
    await Bun.sleep(1500);
    expect(graph.sent).toHaveLength(1);
    expect(outboxRow(databasePath)).toMatchObject({ state: "sent", attempts: 1 });
    expect(await second.stop("SIGTERM")).toBe(0);
  } finally {
    for (const service of services) service.proc.kill("SIGKILL");
    graph.close();
    dir.remove();
  }
}, 40_000);
