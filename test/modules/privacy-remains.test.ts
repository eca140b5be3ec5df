/**
 * An erased user's chat rows copied back into the file from a backup (seal and all) by someone who
 * can write the file but does not hold AUDIT_SECRET_KEY (probe 93b F1): no one could read them, but
 * their text stayed until retention, `db:verify` called them intact, and no command reached them
 * (the account being gone). The audit log's record of the erasure names them.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import type { ChatFeature } from "../../src/modules/chat/feature";
import { buildTestApp, send, type TestApp } from "../support/app";
import { bearer, createKey, signUp } from "../support/auth";
import { asKey, asUser, chat } from "../support/chat";
import { cleanupsAfterEach } from "../support/cleanups";
import { cliInProcess as cli } from "../support/cli";
import { copyBack, type Row, rowsOf } from "../support/file-rows";

const cleanups = cleanupsAfterEach();

function fresh(): TestApp {
  const target = buildTestApp();
  cleanups.push(() => target.close());
  return target;
}

/** Every chat row of the owners, as stored. */
function chatRowsOf(path: string, ownerIds: readonly string[]): Record<string, Row[]> {
  const owners = `owner_id IN (${ownerIds.map(() => "?").join(", ")})`;
  return {
    chat_conversations: rowsOf(path, "chat_conversations", owners, ...ownerIds),
    chat_messages: rowsOf(
      path,
      "chat_messages",
      `conversation_id IN (SELECT id FROM chat_conversations WHERE ${owners})`,
      ...ownerIds,
    ),
    chat_usage: rowsOf(path, "chat_usage", owners, ...ownerIds),
  };
}

function counts(rows: Record<string, Row[]>): Record<string, number> {
  return Object.fromEntries(Object.entries(rows).map(([table, held]) => [table, held.length]));
}

/**
 * A user who chatted (and through `keyed` an API key of theirs) beside a living one, erased:
 * the erased owners' chat rows as they were before, and the living user's counts.
 */
async function chattedThenErased(target: TestApp, keyed: boolean) {
  const erased = await signUp(target);
  const living = await signUp(target);
  const record = keyed ? createKey(target, ["chat"], erased.userId) : null;
  const credentials = [asUser(erased), ...(record ? [asKey(record.key)] : []), asUser(living)];
  for (const credential of credentials) {
    expect((await chat(target, credential, { message: "What can you do?" })).status).toBe(200);
  }
  const owners = [erased.userId, ...(record ? [record.record.id] : [])];
  const backup = chatRowsOf(target.databasePath, owners);
  const kept = counts(chatRowsOf(target.databasePath, [living.userId]));
  const gone = await send(target, "/api/me", {
    method: "DELETE",
    headers: bearer(erased.accessToken),
  });
  expect(gone.status).toBe(204);
  target.services.audit.flush();
  return { erased, living, keyId: record?.record.id ?? null, owners, backup, kept };
}

test("an erased user's conversations, messages and usage copied back are named by db:verify and deleted by users:purge-erased, a living user's kept (probe 93b F1)", async () => {
  const target = fresh();
  const path = target.databasePath;
  const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY: target.config.audit.secretKey };
  const { erased, living, keyId, owners, backup, kept } = await chattedThenErased(target, true);
  expect(counts(backup)).toEqual({ chat_conversations: 2, chat_messages: 4, chat_usage: 2 });
  expect(counts(chatRowsOf(path, owners))).toEqual({
    chat_conversations: 0,
    chat_messages: 0,
    chat_usage: 0,
  });
  for (const [table, rows] of Object.entries(backup)) copyBack(path, table, rows);

  // db:verify names each conversation put back, the user's and the key's, and fails.
  const verified = await cli(["db:verify"], env);
  expect(verified.code).toBe(1);
  for (const conversation of backup.chat_conversations!) {
    expect(verified.stdout).toContain(
      `chat_conversations ${conversation.id}: of an erased account or key, copied back from before its erasure, with its messages (the audit log records its owner erased): no one can read it; users:purge-erased deletes it`,
    );
  }
  expect(verified.stdout).toContain("2 are of an erased account or key");

  // users:erase cannot reach an account that is gone, and says which command does.
  const byId = await cli(["users:erase", "--id", erased.userId, "--yes"], env);
  expect(byId.code).toBe(1);
  expect(byId.stderr).toContain("the audit log records it erased; users:purge-erased deletes");

  // Named first, deleted only with --yes.
  const asked = await cli(["users:purge-erased"], env);
  expect(asked.code).toBe(2);
  expect(asked.stderr).toContain(`user:${erased.userId}`);
  expect(asked.stderr).toContain(`key:${keyId}`);
  expect(counts(chatRowsOf(path, owners))).toEqual(counts(backup));

  const purged = await cli(["users:purge-erased", "--yes"], env);
  expect(purged.code).toBe(0);
  expect(purged.stdout).toContain(
    "deleted what the database file held: rows of 2 erased principals",
  );
  expect(counts(chatRowsOf(path, owners))).toEqual({
    chat_conversations: 0,
    chat_messages: 0,
    chat_usage: 0,
  });
  expect(counts(chatRowsOf(path, [living.userId]))).toEqual(kept);
  // Recorded under the erasure's pseudonym, never the erased ids.
  const recorded = rowsOf(path, "audit_events", "type = 'privacy.erased'");
  expect(recorded.map((row) => row.detail)).toEqual([
    "{}",
    '{"by":"operator","remains":"true"}',
    '{"by":"operator","remains":"true"}',
  ]);
  expect(new Set(recorded.map((row) => row.actor)).size).toBe(1);
  expect(JSON.stringify(rowsOf(path, "audit_events", "1"))).not.toContain(erased.userId);

  expect((await cli(["db:verify"], env)).code).toBe(0);
  expect((await cli(["audit:verify"], env)).code).toBe(0);
  const again = await cli(["users:purge-erased"], env);
  expect(again).toMatchObject({
    code: 0,
    stdout: "nothing of an erased account or key is in the database file",
  });
  // The living user's conversation still reads.
  const list = await send(target, "/api/chat/conversations", { headers: asUser(living) });
  expect(((await list.json()) as { conversations: unknown[] }).conversations).toHaveLength(1);
});

test("an erased user's messages copied back without their conversations are named by db:verify and deleted by users:purge-erased (probe 93c F3)", async () => {
  const target = fresh();
  const path = target.databasePath;
  const env = { DATABASE_PATH: path, AUDIT_SECRET_KEY: target.config.audit.secretKey };
  const { living, backup, kept } = await chattedThenErased(target, false);
  // Only the messages: foreign keys are off in a plain sqlite3 shell.
  copyBack(path, "chat_messages", backup.chat_messages!);
  // And two more at the ends of what an id can be (probe 93e F4, F5).
  const file = new Database(path);
  try {
    for (const id of ["-9223372036854775808", "9007199254740993"]) {
      file.run(
        `CREATE TEMP TABLE copied AS SELECT * FROM chat_messages WHERE id = ${String(backup.chat_messages![0]!.id)}`,
      );
      file.run(`UPDATE copied SET id = ${id}`);
      file.run("INSERT INTO chat_messages SELECT * FROM copied");
      file.run("DROP TABLE copied");
    }
  } finally {
    file.close();
  }
  const orphans = () =>
    rowsOf(path, "chat_messages", "conversation_id NOT IN (SELECT id FROM chat_conversations)");
  expect(orphans()).toHaveLength(4);

  const verified = await cli(["db:verify"], env);
  expect(verified.code).toBe(1);
  for (const id of [
    ...backup.chat_messages!.map((message) => String(message.id)),
    "-9223372036854775808",
    "9007199254740993",
  ]) {
    expect(verified.stdout).toContain(
      `foreign key: chat_messages row ${id} belongs to a chat_conversations row the file does not hold (written into the file): no one can read it; users:purge-erased deletes it`,
    );
  }
  expect(verified.stderr).toContain("4 rows name rows not in the file");

  const asked = await cli(["users:purge-erased"], env);
  expect(asked.code).toBe(2);
  expect(asked.stderr).toContain("the database file holds chat messages of no conversation");
  const purged = await cli(["users:purge-erased", "--yes"], env);
  expect(purged).toMatchObject({
    code: 0,
    stdout: "deleted what the database file held: chat messages of no conversation",
  });
  expect(orphans()).toHaveLength(0);
  expect(counts(chatRowsOf(path, [living.userId]))).toEqual(kept);
  expect((await cli(["db:verify"], env)).code).toBe(0);
});

test("messages of no conversation are deleted a part at a time, each at most 4 MB of text, the first whatever its size (probe 93g F4)", async () => {
  const target = fresh();
  const { backup } = await chattedThenErased(target, false);
  const path = target.databasePath;
  copyBack(path, "chat_messages", backup.chat_messages!.slice(0, 1));
  const file = new Database(path);
  try {
    const first = String(backup.chat_messages![0]!.id);
    file.run("CREATE TEMP TABLE copied AS SELECT * FROM chat_messages WHERE 0");
    for (let i = 0; i < 5; i++) {
      file.run(`INSERT INTO copied SELECT * FROM chat_messages WHERE id = ${first}`);
    }
    // Large text in the content of some, in the seal of others (probe 93h F4: only the content
    // was counted).
    file.run("UPDATE copied SET id = 1000000 + rowid");
    file.run("UPDATE copied SET content = printf('%.*c', 1500000, 'x') WHERE rowid <= 2");
    file.run("UPDATE copied SET seal = printf('%.*c', 1500000, 's') WHERE rowid > 2");
    file.run("INSERT INTO chat_messages SELECT * FROM copied");
    file.run(`DELETE FROM chat_messages WHERE id = ${first}`);
  } finally {
    file.close();
  }
  const chatService = (target.services.features.find((f) => f.name === "chat") as ChatFeature)
    .service;
  // 1.5 MB each: two to a part (3 MB), never all five.
  const parts: number[] = [];
  let after: string | null = null;
  do {
    const part = chatService.deleteUnownedMessages(after, 250);
    parts.push(part.rows);
    after = part.next;
  } while (after !== null);
  expect(parts.filter((rows) => rows > 0)).toEqual([2, 2, 1]);
});
