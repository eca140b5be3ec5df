/**
 * Another instance of the service on a test app's database file, with its own SQLite connection,
 * caches and (optionally) configuration: what a second process on the same VM, or the same process
 * after a restart with changed settings, sees.
 */
import { createApp } from "../../src/app";
import type { Clock } from "../../src/clock";
import { openDatabase } from "../../src/db/client";
import type { FeatureOptions } from "../../src/features";
import { createLogger } from "../../src/logging/logger";
import type { ChatProvider } from "../../src/modules/chat/providers/provider";
import { createServices } from "../../src/services";
import { LogCapture, TEST_PASSWORD_HASHING, type TestApp, testConfig } from "./app";
import { ManualClock } from "./clock";

export interface Instance {
  app: ReturnType<typeof createApp>;
  services: ReturnType<typeof createServices>;
  /** What the instance logged. */
  logs: LogCapture;
  close(): void;
}

export function anotherInstance(
  target: TestApp,
  options: {
    clock?: Clock;
    env?: Record<string, string>;
    whatsapp?: FeatureOptions["whatsapp"];
    chatProvider?: ChatProvider;
  } = {},
): Instance {
  const config = testConfig(target.databasePath, options.env);
  const db = openDatabase(target.databasePath);
  const logs = new LogCapture();
  const services = createServices({
    config,
    db,
    logger: createLogger({ level: "info", destination: logs }),
    clock: options.clock,
    passwordHashing: TEST_PASSWORD_HASHING,
    maintenanceIntervalMs: 0,
    whatsapp: options.whatsapp,
    chatProvider: options.chatProvider,
  });
  const app = createApp({ ...services, peerAddress: () => "127.0.0.1" });
  let closed = false;
  return {
    app,
    services,
    logs,
    close() {
      if (closed) return;
      closed = true;
      services.close();
      db.$client.close();
    },
  };
}

/**
 * Another instance whose clock stands still: it never reads the revocation feed again, so it
 * keeps accepting the credentials it verified before a revocation made elsewhere — the second a
 * process not yet told would, made to last.
 */
export function untoldInstance(target: TestApp, env?: Record<string, string>): Instance {
  return anotherInstance(target, { clock: new ManualClock(0, 1), env });
}
