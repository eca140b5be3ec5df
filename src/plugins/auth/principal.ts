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
    };

/** The id rate limits and audit rows use for a principal. */
export function principalRef(principal: Principal): string {
  return principal.kind === "user" ? `user:${principal.id}` : `key:${principal.id}`;
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
