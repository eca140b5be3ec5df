/** Helpers for tests that need accounts, sessions and keys. */
import type { Scope } from "../../src/plugins/auth/principal";
import { send, type TestApp } from "./app";

export const STRONG_PASSWORD = "violet-Harbor-quantum-73!";

export interface Session {
  accessToken: string;
  refreshToken: string;
  userId: string;
  email: string;
}

let counter = 0;

/** Registers through the API and logs in; promotes to admin through the service when asked. */
export async function signUp(
  target: TestApp,
  options: { email?: string; role?: "user" | "admin"; peer?: string } = {},
): Promise<Session> {
  const email = options.email ?? `user${++counter}-${Date.now()}@example.test`;
  const peer = options.peer ?? `10.9.${counter % 250}.${(counter * 7) % 250}`;
  const registered = await send(target, "/api/auth/register", {
    body: { email, password: STRONG_PASSWORD },
    peer,
  });
  if (registered.status !== 201)
    throw new Error(`register: ${registered.status} ${await registered.text()}`);
  const user = target.services.auth.findUserByEmail(email)!;
  if (options.role === "admin") target.services.auth.setRole(user.id, "admin", "test");
  return { ...(await logIn(target, email, peer)), userId: user.id, email };
}

export async function logIn(target: TestApp, email: string, peer = "10.8.0.1") {
  const response = await send(target, "/api/auth/login", {
    body: { email, password: STRONG_PASSWORD },
    peer,
  });
  if (response.status !== 200)
    throw new Error(`login: ${response.status} ${await response.text()}`);
  return (await response.json()) as { accessToken: string; refreshToken: string };
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

export function createKey(target: TestApp, scopes: Scope[], userId: string | null = null) {
  return target.services.apiKeys.create({ name: `test-${++counter}`, scopes, userId }, "test");
}

/**
 * What another process's revocation does when it commits between the auth stage's check of an
 * admin request and its handler: `authStageStillAdmin` (a test app option) answers the stage as the
 * service does, then, when armed, revokes the key or logs out the session that asked, or with
 * `arm("demote")` makes its owner a user (the key narrowed, the session ended). `arm()` before the
 * request; `services` are the app's, once it is built.
 */
export function endedAfterAuthStage(services: () => TestApp["services"]) {
  let armed: "end" | "demote" | null = null;
  return {
    authStageStillAdmin:
      (stillAdmin: TestApp["services"]["standing"]["stillAdmin"]) =>
      (principal: Parameters<TestApp["services"]["standing"]["stillAdmin"]>[0]) => {
        const stands = stillAdmin(principal);
        const how = armed;
        armed = null;
        const owner = principal.kind === "key" ? principal.userId : principal.id;
        if (how === "demote" && owner !== null) services().auth.setRole(owner, "user", "test");
        else if (how === "end" && principal.kind === "key")
          services().apiKeys.revoke(principal.id, "test");
        else if (how === "end" && principal.kind === "user")
          services().auth.revokeFamily(principal.familyId);
        return stands;
      },
    arm(how: "end" | "demote" = "end") {
      armed = how;
    },
  };
}
