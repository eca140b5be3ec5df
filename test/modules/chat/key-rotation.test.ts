/**
 * A key's conversations follow its rotation chain while the chain acts for one owner: the successor
 * reads, continues and deletes what its predecessor started (and the predecessor, through its grace,
 * what the successor starts). Membership is the sealed lineage and the sealed owner, so a lineage
 * written into the database file joins no chain, and a successor an admin rotated for themselves
 * (another owner) reads nothing of the key it replaced.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { asKey, chat } from "../../support/chat";

let target: TestApp;
let adminHeaders: Record<string, string>;
/** Rotated by an operator key (acting for no user): an ownerless key's successor stays ownerless. */
let rotate: (id: string, headers?: Record<string, string>) => Promise<{ key: string; id: string }>;

beforeEach(async () => {
  target = buildTestApp();
  adminHeaders = bearer((await signUp(target, { role: "admin" })).accessToken);
  const operator = asKey(createKey(target, ["admin"]).key);
  rotate = async (id, headers = operator) => {
    const response = await send(target, `/api/admin/api-keys/${id}/rotate`, {
      headers,
      body: { graceMinutes: 5 },
    });
    expect(response.status).toBe(201);
    const body = (await response.json()) as { key: string; apiKey: { id: string } };
    return { key: body.key, id: body.apiKey.id };
  };
});
afterEach(() => target.close());

async function start(key: string, message = "How do I sign up?"): Promise<string> {
  const response = await chat(target, asKey(key), { message });
  expect(response.status).toBe(200);
  return ((await response.json()) as { conversationId: string }).conversationId;
}

async function listed(key: string): Promise<string[]> {
  const response = await send(target, "/api/chat/conversations", { headers: asKey(key) });
  expect(response.status).toBe(200);
  return ((await response.json()) as { conversations: { id: string }[] }).conversations.map(
    (conversation) => conversation.id,
  );
}

const read = (key: string, id: string) =>
  send(target, `/api/chat/conversations/${id}`, { headers: asKey(key) });

describe("a rotated key keeps its conversations", () => {
  test("the successor lists, reads, continues and deletes what its predecessor started; the predecessor sees the successor's", async () => {
    const old = createKey(target, ["chat"]);
    const first = await start(old.key);
    const successor = await rotate(old.record.id);
    expect(await listed(successor.key)).toEqual([first]);
    expect((await read(successor.key, first)).status).toBe(200);
    const continued = await chat(target, asKey(successor.key), {
      message: "and rate limits?",
      conversationId: first,
    });
    expect(continued.status).toBe(200);
    expect(((await continued.json()) as { conversationId: string }).conversationId).toBe(first);
    const shown = (await (await read(successor.key, first)).json()) as { messageCount: number };
    expect(shown.messageCount).toBe(4);
    const second = await start(successor.key);
    expect((await listed(old.key)).sort()).toEqual([first, second].sort());
    // Rotated again: the third key holds the whole chain's.
    const third = await rotate(successor.id);
    expect((await listed(third.key)).sort()).toEqual([first, second].sort());
    const deleted = await send(target, `/api/chat/conversations/${first}`, {
      method: "DELETE",
      headers: asKey(third.key),
    });
    expect(deleted.status).toBe(204);
    expect(await listed(successor.key)).toEqual([second]);
  });

  test("a key deleted from the file links nothing: what it started is no longer the chain's", async () => {
    const old = createKey(target, ["chat"]);
    const first = await start(old.key);
    const successor = await rotate(old.record.id);
    const second = await start(successor.key);
    target.db.$client.run("DELETE FROM api_keys WHERE id = ?", [old.record.id]);
    expect(await listed(successor.key)).toEqual([second]);
    expect((await read(successor.key, first)).status).toBe(404);
  });

  test("another key, or a key claiming the chain's lineage without its seal, sees none of it", async () => {
    const old = createKey(target, ["chat"]);
    const first = await start(old.key);
    const successor = await rotate(old.record.id);
    const stranger = createKey(target, ["chat"]);
    expect(await listed(stranger.key)).toEqual([]);
    const sqlite = target.db.$client;
    const sealOf = (id: string) =>
      (
        sqlite.query("SELECT lineage_seal AS s FROM api_keys WHERE id = ?").get(id) as {
          s: string;
        }
      ).s;
    // The lineage, unsealed; then with the successor's seal copied (over the successor's id).
    for (const lineageSeal of [null, sealOf(successor.id)]) {
      sqlite.run("UPDATE api_keys SET lineage = ?, lineage_seal = ? WHERE id = ?", [
        old.record.id,
        lineageSeal,
        stranger.record.id,
      ]);
      expect(await listed(stranger.key)).toEqual([]);
      expect((await read(stranger.key, first)).status).toBe(404);
      const continued = await chat(target, asKey(stranger.key), {
        message: "hello",
        conversationId: first,
      });
      expect(continued.status).toBe(404);
      // Nor does the forged row join the chain for the genuine keys.
      expect(await listed(successor.key)).toEqual([first]);
    }
  });

  test("a successor that acts for another owner reads nothing of the key it replaced", async () => {
    // An admin rotating a key gets a successor acting for the admin: a new owner.
    const ownerless = createKey(target, ["chat"]);
    await start(ownerless.key);
    const admins = await rotate(ownerless.record.id, adminHeaders);
    expect(await listed(admins.key)).toEqual([]);
    const alice = await signUp(target);
    const alicesKey = createKey(target, ["chat"], alice.userId);
    await start(alicesKey.key);
    const adminsToo = await rotate(alicesKey.record.id, adminHeaders);
    expect(await listed(adminsToo.key)).toEqual([]);
    // And the replaced keys, through their grace, read nothing of the admin's new keys'.
    await start(adminsToo.key);
    expect(await listed(alicesKey.key)).toHaveLength(1);
  });

  test("an operator key rotating a user's key gets an ownerless key that reads none of the key's history (probes 20c F1, 20d F1)", async () => {
    const alice = await signUp(target);
    const alicesKey = createKey(target, ["chat"], alice.userId);
    await start(alicesKey.key);
    const successor = await rotate(alicesKey.record.id);
    const shown = await send(target, "/api/admin/api-keys", { headers: adminHeaders });
    const { keys } = (await shown.json()) as {
      keys: { id: string; owner: { id: string } | null }[];
    };
    expect(keys.find((key) => key.id === successor.id)?.owner).toBeNull();
    expect(await listed(successor.key)).toEqual([]);
    const theirs = await start(successor.key);
    expect(await listed(alicesKey.key)).not.toContain(theirs);
  });

  test("a user's conversations and a key's stay apart", async () => {
    const alice = await signUp(target);
    const own = createKey(target, ["chat"], alice.userId);
    const fromKey = await start(own.key);
    const asAlice = await chat(target, bearer(alice.accessToken), { message: "hello" });
    const fromUser = ((await asAlice.json()) as { conversationId: string }).conversationId;
    expect(await listed(own.key)).toEqual([fromKey]);
    const aliceList = await send(target, "/api/chat/conversations", {
      headers: bearer(alice.accessToken),
    });
    const ids = ((await aliceList.json()) as { conversations: { id: string }[] }).conversations.map(
      (conversation) => conversation.id,
    );
    expect(ids).toEqual([fromUser]);
  });
});
