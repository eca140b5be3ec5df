/**
 * @module
 * Adds `clientIp` to every request's context, before any defence that keys on it runs.
 */
import { Elysia } from "elysia";
import type { TrustProxy } from "../../config";
import { compileTrust, resolveClientIp } from "./resolve";

export interface ClientIpOptions {
  trustProxy: TrustProxy;
  /**
   * Finds the socket peer's address. Defaults to Bun's `server.requestIP`; tests that call
   * `app.handle` (which has no socket) pass their own.
   */
  peerAddress?: (request: Request) => string | null;
}

export function clientIp({ trustProxy, peerAddress }: ClientIpOptions) {
  const trust = compileTrust(trustProxy);
  return new Elysia({ name: "palisade.client-ip", seed: trustProxy })
    .decorate("clientIp", "")
    .onRequest(function resolveClientAddress(context) {
      const peer = peerAddress
        ? peerAddress(context.request)
        : (context.server?.requestIP(context.request)?.address ?? null);
      context.clientIp = resolveClientIp(
        { peer, forwardedFor: context.request.headers.get("x-forwarded-for") },
        trust,
      );
    })
    .as("global");
}
