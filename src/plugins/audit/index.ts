/**
 * @module
 * The audit log: security events in a hash-chained SQLite table (see log.ts for how it is written,
 * verified and pruned). Defences and modules receive the log as a dependency and call `record`.
 */
export type { AuditEvent } from "./events";
export { type AuditLog, SqliteAuditLog, verifyAuditChain } from "./log";
