import type { API_KEY_SCOPES } from "../../db/schema";

export type Scope = (typeof API_KEY_SCOPES)[number];
export type Role = "user" | "admin";

/** Who a request acts for, once its credential has been verified. */
export type Principal =
  | {
      kind: "user";
      id: string;
      role: Role;
      familyId: string;
      via: "bearer" | "cookie";
    }
  | {
      kind: "key";
      id: string;
      name: string;
      /** The user the key acts for; null for bootstrap keys. */
      userId: string | null;
      scopes: readonly Scope[];
      /** A bootstrap key's name for the rate limits, the same on every VM (limitNameOf). */
      limitName?: string;
    };

/** The id rate limits and audit rows use for a principal. */
export function principalRef(principal: Principal): string {
  return principal.kind === "user" ? `user:${principal.id}` : `key:${principal.id}`;
}

/**
 * The name the rate limits and lockouts count a principal under: `principalRef`, but for a
 * bootstrap key. An API_KEYS entry is one credential on every VM, while each VM's file gives its
 * row an id of its own: counted by that id, VMs sharing Redis each gave it the whole budget and
 * counted its refusals apart (probe 35b F1). It is counted as `bootstrapLimitName` instead. Any
 * other key, and a user, is a row of one file.
 */
export function limitNameOf(principal: Principal): string {
  if (principal.kind === "key" && principal.limitName !== undefined) return principal.limitName;
  return principalRef(principal);
}

/**
 * A bootstrap key's limit name, from the hash its row stores (the key's SHA-256): the same on every
 * VM whatever its secrets, and no more about the key than the stored hash says.
 */
export function bootstrapLimitName(secretHash: string): string {
  const derived = Bun.SHA256.hash(`palisade bootstrap key limit name v1\u0000${secretHash}`, "hex");
  return `key:bootstrap-${derived.slice(0, 32)}`;
}

/** What `principalRef` names (`user:<id>`, `key:<id>`), or null for any other actor. */
export function parsePrincipalRef(reference: string): { kind: "user" | "key"; id: string } | null {
  if (reference.startsWith("user:")) return { kind: "user", id: reference.slice(5) };
  if (reference.startsWith("key:")) return { kind: "key", id: reference.slice(4) };
  return null;
}

/**
 * The scopes a key may hold for an owner of each role. A key acts for its owner, so it can never do
 * more than the owner may: an admin's key any scope, a user's key only what a user does (chat and
 * payments; `admin` and `metrics` are the operators'). Applied when a key is created, when its
 * owner's role changes (the stored scopes narrow), and again at every use.
 */
export const ROLE_SCOPES: Record<Role, readonly Scope[]> = {
  admin: ["chat", "payments", "admin", "metrics"],
  user: ["chat", "payments"],
};

/** A key's effective scopes: its own, bounded by its owner's role (ownerless keys: their own). */
export function boundScopes(scopes: readonly Scope[], ownerRole: Role | null): Scope[] {
  if (ownerRole === null) return [...scopes];
  const allowed = ROLE_SCOPES[ownerRole];
  return scopes.filter((scope) => allowed.includes(scope));
}

/**
 * Thrown inside a writing transaction when the credential that asked for the write no longer
 * stands (revoked, logged out, its account erased or demoted). The auth stage asks before the
 * handler, but requests already past it when the revocation commits (in this process or another)
 * would otherwise write after it: a key minted then outlives the credential that minted it
 * (probe 38c F1). Answered 401 UNAUTHENTICATED.
 */
export class ActorGone extends Error {
  constructor() {
    super("the credential making the change no longer stands");
    this.name = "ActorGone";
  }
}
