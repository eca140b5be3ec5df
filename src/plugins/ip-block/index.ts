/**
 * @module
 * The IP-block stage: a blocked address (or an IPv6 address in a blocked /48) gets 403 IP_BLOCKED
 * before any other work. Probe route classes (/health, /ready) are exempt, so a container health
 * check from an address that was blocked does not take the service down with it. /metrics is not a probe here: it checks a token,
 * and a blocked address must not keep guessing it.
 */
import { Elysia } from "elysia";
import type { Clock } from "../../clock";
import { AppError } from "../../errors";
import type { RequestState } from "../request-state";
import type { IpBlockService } from "./service";

export function ipBlock({ service, clock }: { service: IpBlockService; clock: Clock }) {
  return new Elysia({ name: "palisade.ip-block" })
    .onRequest(function refuseBlockedAddress(context) {
      const { routeClass, client } = context as unknown as RequestState;
      if (routeClass.probe) return;
      // Its /64's block or its /48's, whichever ends later.
      const until = service.clientBlockedUntil(client);
      if (until === null) return;
      const seconds = Math.max(1, Math.ceil((until - clock.now()) / 1000));
      throw new AppError("IP_BLOCKED", "Requests from this address are blocked.", undefined, {
        "retry-after": String(seconds),
      });
    })
    .as("global");
}
