import { isNull } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * Security events, hash-chained with a key: each row's `hash` is an HMAC (keyed with
 * AUDIT_SECRET_KEY) over its id, its fields and the previous row's hash, so editing, inserting,
 * deleting or re-chaining rows breaks the chain for anyone without the key. Personal data (actor,
 * client IP, and the detail, which may name other people) is covered through `subjectCommit`, a
 * salted hash of them (rows written before details were committed: of actor and IP only, the
 * detail then in the hash), so erasure can replace them with a pseudonym and drop the salt; the
 * rewrite is itself authenticated by `erasureMac`.
 */
export const auditEvents = sqliteTable(
  "audit_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    at: integer("at").notNull(),
    type: text("type").notNull(),
    actor: text("actor"),
    ip: text("ip"),
    route: text("route"),
    requestId: text("request_id"),
    outcome: text("outcome").notNull(),
    detail: text("detail").notNull(),
    /** Random per row; deleted on erasure so the commitment can no longer be brute-forced. */
    subjectSalt: text("subject_salt"),
    subjectCommit: text("subject_commit").notNull(),
    prevHash: text("prev_hash").notNull(),
    hash: text("hash").notNull(),
    /** Which AUDIT_SECRET_KEY keyed the row; NULL: written before the chain was keyed. */
    keyId: text("key_id"),
    /** Set by erasure (with the salt dropped): HMAC over the row's id, commitment and new subject. */
    erasureMac: text("erasure_mac"),
  },
  (table) => [
    index("audit_events_at").on(table.at),
    index("audit_events_type_at").on(table.type, table.at),
    // The admin audit filter by type, newest first: by (type, at) SQLite read every row of the
    // type whole and sorted them by id for each page (0.5–0.6 s at a million rows, probe 91b F1).
    index("audit_events_type_id").on(table.type, table.id),
    index("audit_events_actor").on(table.actor),
    // The admin audit filter by address (`?ip=`): without it a walk of the whole table, 0.35–0.46 s
    // of every request's time at a million rows (probe 86c F1).
    index("audit_events_ip").on(table.ip),
    // Every start asks whether unkeyed rows exist (plugins/audit/upgrade); without this the answer
    // is a scan of the whole table (~200 ms at a million rows). Empty once keyed: no write cost.
    index("audit_events_unkeyed").on(table.id).where(isNull(table.keyId)),
  ],
);

/**
 * The principals each event's detail names (`user:<id>`, `key:<id>`: an admin's look-up of a user,
 * a key made or revoked for one): how erasure finds the events that name someone without reading
 * the whole log. Raw ids, so erasure deletes a principal's rows here as it rewrites its events,
 * and retention deletes them with their events.
 */
export const auditEventNames = sqliteTable(
  "audit_event_names",
  {
    name: text("name").notNull(),
    eventId: integer("event_id").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.name, table.eventId] }),
    index("audit_event_names_event").on(table.eventId),
  ],
);

/**
 * Where retention cut the chain: the first kept row has id `lastDeletedId + 1` and its prev_hash
 * equals `lastHash`. `mac` (keyed like the rows) makes a forged checkpoint detectable.
 */
export const auditCheckpoints = sqliteTable("audit_checkpoints", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  createdAt: integer("created_at").notNull(),
  lastDeletedId: integer("last_deleted_id").notNull(),
  lastHash: text("last_hash").notNull(),
  deletedCount: integer("deleted_count").notNull(),
  keyId: text("key_id"),
  mac: text("mac"),
});

/**
 * Actors erasure has pseudonymised, each under its own keyed pseudonym (`actor_key`, never the id
 * itself), with the pseudonym its rows were given. An event for such an actor written after the
 * erasure — queued by another process, or by a request that was under way — is written under that
 * pseudonym, without its address, as erasure left the earlier rows. Without AUDIT_SECRET_KEY no
 * row here can be made to match a living actor, nor its pseudonym changed (`mac`).
 */
export const auditErasedActors = sqliteTable("audit_erased_actors", {
  actorKey: text("actor_key").primaryKey(),
  pseudonym: text("pseudonym").notNull(),
  erasedAt: integer("erased_at").notNull(),
  /** HMAC (keyed with AUDIT_SECRET_KEY) over the actor key and the pseudonym. */
  mac: text("mac").notNull(),
});
