/**
 * @module
 * Builds the application from its dependencies. The defences run in the documented order,
 * each an Elysia plugin whose `onRequest`/`onAfterResponse` hooks apply to every route:
 *
 *   request id → client ip → IP block → rate limit → body-size and request guard →
 *   security headers → CORS → CSRF → auth → validation → handler → audit and metrics
 *
 * Nothing here is a module-level singleton: a test builds its own app on its own database.
 */
import { Elysia } from "elysia";
import type { Clock } from "./clock";
import { systemClock } from "./clock";
import type { Config } from "./config";
import type { AppDatabase } from "./db/client";
import type { Logger } from "./logging/logger";
import { healthModule } from "./modules/health";
import { accessLog } from "./plugins/access-log";
import { clientIp } from "./plugins/client-ip";
import { errorHandler } from "./plugins/error-handler";
import type { RouteEntry } from "./plugins/error-handler/route-methods";
import { openapiDocument } from "./plugins/openapi";
import { requestId } from "./plugins/request-id";

export interface AppDeps {
  config: Readonly<Config>;
  db: AppDatabase;
  logger: Logger;
  clock?: Clock;
  /** Overrides the socket peer lookup; for tests that call `app.handle` without a server. */
  peerAddress?: (request: Request) => string | null;
}

export function createApp(deps: AppDeps) {
  const { config, db, logger } = deps;
  const clock = deps.clock ?? systemClock;
  void clock;

  let registeredRoutes: () => readonly RouteEntry[] = () => [];
  const app = new Elysia({ name: "palisade" })
    .use(requestId())
    .use(clientIp({ trustProxy: config.trustProxy, peerAddress: deps.peerAddress }))
    .use(errorHandler({ logger, routes: () => registeredRoutes() }))
    .use(accessLog({ logger }))
    .use(openapiDocument({ docsPage: config.docsPage }))
    .use(
      healthModule({
        checks: {
          database: () => {
            db.$client.query("SELECT 1").values();
          },
        },
      }),
    );
  registeredRoutes = () => app.routes;
  return app;
}

export type App = ReturnType<typeof createApp>;
