/**
 * What the database file keeps of deleted and cleared data: `PRAGMA secure_delete = ON` on every
 * connection zeroes freed cells and freelist pages, so after a checkpoint the bytes of a cleared
 * WhatsApp number, or of rows deleted outright, are nowhere in the file.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import type { WhatsAppWebhook } from "../../src/modules/webhooks/whatsapp";
import { buildTestApp, send, type TestApp, tempDir } from "../support/app";
import { bearer, signUp } from "../support/auth";
import { cleanupsAfterEach } from "../support/cleanups";
import { startGraphServer } from "../support/graph-server";
import { deliver, notification, ScriptedChat, whatsappEnv } from "../support/whatsapp";

const cleanups = cleanupsAfterEach();

/** The whole main file, after every committed page has been copied into it. */
async function fileBytes(target: { db: TestApp["db"] }, path: string): Promise<string> {
  target.db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
  return Buffer.from(await Bun.file(path).arrayBuffer()).toString("latin1");
}

describe("secure_delete", () => {
  test("every connection openDatabase makes has it ON", () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const db = openDatabase(join(dir.path, "app.db"));
    cleanups.push(() => db.$client.close());
    expect(db.$client.query("PRAGMA secure_delete").values()[0]![0]).toBe(1);
  });

  test("after the replies are sent, no cleared sender number is left anywhere in the file", async () => {
    const graph = startGraphServer();
    cleanups.push(() => graph.close());
    const target = buildTestApp({
      env: whatsappEnv(graph, { RATE_LIMIT_WEBHOOKS: "1000", RATE_LIMIT_BURST: "1000" }),
      whatsapp: { chat: new ScriptedChat() },
    });
    cleanups.push(() => target.close());
    // Ten senders, one message each: every reply sent, every number cleared from its row.
    const numbers = Array.from({ length: 10 }, (_, i) => `1999888${String(7700 + i)}`);
    for (const [i, from] of numbers.entries()) {
      const response = await deliver(
        target,
        notification({ messages: [{ id: `wamid.PRIV${i}`, from, text: `question ${i}` }] }),
      );
      expect(response.status).toBe(200);
    }
    const whatsapp = target.services.features.find((f) => f.name === "whatsapp") as WhatsAppWebhook;
    while ((await whatsapp.worker.drain()) > 0) {}
    await graph.waitForSent(numbers.length);
    const rows = target.db.$client
      .query<{ recipient: string | null; body: string | null; state: string }, []>(
        "SELECT recipient, body, state FROM whatsapp_outbox",
      )
      .all();
    expect(rows).toHaveLength(numbers.length);
    expect(rows.every((r) => r.recipient === null && r.body === null && r.state === "sent")).toBe(
      true,
    );
    const bytes = await fileBytes(target, target.databasePath);
    expect(numbers.filter((n) => bytes.includes(n))).toEqual([]);
  });

  test("rows deleted outright leave no bytes behind, also on the pages freed whole", async () => {
    const dir = tempDir();
    cleanups.push(() => dir.remove());
    const path = join(dir.path, "app.db");
    const db = openDatabase(path);
    cleanups.push(() => db.$client.close());
    applyMigrations(db);
    // Enough rows to fill many pages: deleting them all puts whole pages on the freelist.
    const insert = db.$client.prepare(
      "INSERT INTO webhook_events (provider, event_id, type, received_at) VALUES ('whatsapp', ?, 'message.text', 0)",
    );
    db.$client.transaction(() => {
      for (let i = 0; i < 3000; i++) insert.run(`wamid.SECRET-MARKER-${i}`);
    })();
    db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
    expect(await fileBytes({ db }, path)).toContain("SECRET-MARKER-");
    db.$client.run("DELETE FROM webhook_events");
    expect(await fileBytes({ db }, path)).not.toContain("SECRET-MARKER-");
  });

  test("an erasure reaches the database file itself at once, not at the next checkpoint", async () => {
    const target = buildTestApp();
    cleanups.push(() => target.close());
    const email = `erin-${Bun.randomUUIDv7()}@example.test`;
    const erin = await signUp(target, { email });
    // Everything so far in the file, as on a service that has run a while; then a quiet spell.
    target.db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
    const mainFile = async () =>
      Buffer.from(await Bun.file(target.databasePath).arrayBuffer()).toString("latin1");
    expect(await mainFile()).toContain(email);
    const erased = await send(target, "/api/me", {
      method: "DELETE",
      headers: bearer(erin.accessToken),
    });
    expect(erased.status).toBe(204);
    // No checkpoint here: the erasure made its own.
    expect(await mainFile()).not.toContain(email);
  });
});
