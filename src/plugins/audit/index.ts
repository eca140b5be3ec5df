/**
 * @module
 * Puts the audit log on every request's context as `audit`, so defences and handlers record
 * security events in one way.
 */
import { Elysia } from "elysia";
import type { AuditLog } from "./log";

export type { AuditEvent } from "./events";
export type { AuditLog } from "./log";

export function audit({ log }: { log: AuditLog }) {
  return new Elysia({ name: "palisade.audit" }).decorate("audit", log);
}
