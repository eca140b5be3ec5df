/**
 * The maintenance runs every 10 s, and each of its statements holds the write lock while it looks
 * for what to delete: one that reads a whole table grows with it, past the 50 ms a request waits
 * for the lock before its 503 (the session prune read 720,000 tokens in 0.15 s, the WhatsApp prune
 * 300,000 outbox rows in 0.1 s). Every statement it prepares must find its rows through an index,
 * but those named below, each with why its table stays small or why its read stops early.
 */
import { expect, test } from "bun:test";
import { cleanupsAfterEach } from "./support/cleanups";
import { outboxSetup } from "./support/outbox";
import { planOf, statementsPrepared } from "./support/query-plans";

const cleanups = cleanupsAfterEach();

/** Reads of a whole table allowed, by the statement they are in. */
const ALLOWED: readonly { table: string; statement: RegExp; why: string }[] = [
  { table: "main.sqlite_master", statement: /sqlite_master/, why: "the schema's own rows" },
  {
    table: "audit_events",
    statement: /^select "id", "at" from "audit_events" order by "audit_events"\."id" asc limit \?/,
    why: "the oldest rows in id order: it stops at its limit",
  },
  {
    table: "audit_checkpoints",
    statement: /order by "audit_checkpoints"\."id" desc limit \?/,
    why: "the newest checkpoint: it stops at its limit",
  },
  {
    table: "audit_erased_actors",
    statement: /^SELECT count\(\*\) AS n FROM audit_erased_actors/,
    why: "counted through its covering index, a row per erased account",
  },
  {
    table: "chat_reservations",
    statement: /chat_reservations/,
    why: "a row per chat turn in flight, deleted when it ends",
  },
  { table: "gone", statement: /"chat_holders" AS gone/, why: "a row per process on the file" },
];

/** The table a plan's step reads whole (SCAN), by the name the statement gives it; else null. */
const scanned = (step: string) => /^SCAN ([\w.]+)/.exec(step)?.[1] ?? null;

test("every statement the maintenance runs finds its rows through an index, but reads of tables that stay small or that stop at their limit", async () => {
  const { target, clock } = outboxSetup(cleanups);
  const sqlite = target.db.$client;
  const statements = await statementsPrepared(sqlite, () => {
    target.services.runMaintenance();
    // Past every retention: the statements that delete run as well as those that look.
    clock.advance(400 * 24 * 60 * 60_000);
    target.services.runMaintenance();
  });
  const distinct = [...new Set(statements)];
  expect(distinct.length).toBeGreaterThan(10);
  const names = (type: string) =>
    sqlite
      .query<{ name: string; sql: string | null }, [string]>(
        "SELECT name, sql FROM sqlite_master WHERE type = ?",
      )
      .all(type);
  const tables = new Set(names("table").map((row) => row.name));
  // A partial index holds only the few rows its condition names: reading it whole is the point.
  const partial = new Set(
    names("index")
      .filter((row) => / WHERE /i.test(row.sql ?? ""))
      .map((row) => row.name),
  );
  const unexplained: string[] = [];
  for (const text of distinct) {
    // A table the statement names again (`"chat_holders" AS gone`) is read as that table.
    const aliases = new Set(
      [...text.matchAll(/"?(\w+)"? AS (\w+)/gi)]
        .filter(([, table]) => tables.has(table!))
        .map(([, , alias]) => alias!),
    );
    for (const step of planOf(sqlite, text)) {
      const name = scanned(step);
      if (name === null || !(tables.has(name) || aliases.has(name) || name.startsWith("main.")))
        continue; // a subquery's rows, not a table's
      const index = /USING (?:COVERING )?INDEX (\w+)/.exec(step)?.[1];
      if (index !== undefined && partial.has(index)) continue;
      const allowed = ALLOWED.some(
        (entry) => entry.table === name && entry.statement.test(text.trim()),
      );
      if (!allowed) unexplained.push(`${step}  in  ${text.replace(/\s+/g, " ").slice(0, 160)}`);
    }
  }
  expect(unexplained).toEqual([]);
});
