/**
 * @module
 * What a feature contributes to the app. Each feature folder in `src/modules/` has one factory that
 * takes the core (the defences' stateful parts, see `src/core.ts`) and returns this; `src/features.ts`
 * lists the factories, and `createServices` / `createApp` compose whatever the list holds. Adding a
 * feature is writing its folder and one line in that list: no shared file grows with it.
 */
import type { AnyElysia } from "elysia";
import type { authPlugin } from "../plugins/auth";
import type { RouteClass } from "../plugins/route-class";
import type { ReadinessCheck } from "./health/service";
import type { PrivacyContributor } from "./privacy/contributor";

/** What a feature's routes are built with, once the app's auth stage exists. */
export interface WebContext {
  /** The auth stage: every route declares `{ public: true }` or `{ auth: … }` against it. */
  auth: ReturnType<typeof authPlugin>;
  /** Every readiness check of the core and the features (what `/ready` runs). */
  readiness: Record<string, ReadinessCheck>;
}

export interface Feature {
  name: string;
  /** The classes of the feature's routes: policy, body limit, probe, CSRF exemption. */
  routeClasses: readonly RouteClass[];
  /** The feature's Elysia module (its controller). */
  routes(web: WebContext): AnyElysia;
  /** Dependencies `/ready` checks, by name. */
  readiness?: Record<string, ReadinessCheck>;
  /** Bounded clean-up, run by the background maintenance every few seconds. */
  maintenance?(now: number): void;
  /** What the feature holds about a user, for export, erasure and retention. */
  privacy?: readonly PrivacyContributor[];
  /** Starts the feature's background work (a worker) once the app is about to serve. */
  start?(): void | Promise<void>;
  /**
   * Lets background work in flight finish (bounded) at shutdown, after the last request and
   * before `close()` and the database closing.
   */
  stop?(): Promise<void>;
  /**
   * Ends what the feature still has in flight when the shutdown's drain time is up, just before
   * the connections are closed, the way its clients can read (a chat turn not yet answered with a
   * 503, a chat stream with an `error` event) rather than as a cut connection.
   */
  endInFlight?(): void | Promise<void>;
  /**
   * Logs each write the feature still leaves undone (one waiting for another connection's lock)
   * when the process exits now: a stop signalled again exits without waiting for them (probe 45a
   * F3: a refund Stripe made went missing from the ledger without a line naming it).
   */
  reportUndone?(why: string): void;
  /** Flushes and stops what the feature runs; called once at shutdown. */
  close?(): void;
}
