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
