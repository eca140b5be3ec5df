/**
 * @module
 * The auth feature: accounts, sessions and API keys, their routes, their clean-up and what they
 * hold about a user. Verifying credentials is the auth defence's (plugins/auth), in the core.
 */
import type { Core } from "../../core";
import type { CredentialStanding } from "../../plugins/auth";
import type { Principal } from "../../plugins/auth/principal";
import { createCsrfIssuer } from "../../plugins/csrf";
import type { Feature } from "../feature";
import { ApiKeyService } from "./api-keys";
import { authModule, authRouteClasses } from "./index";
import {
  createPasswordWork,
  defaultPasswordWorkLimits,
  type PasswordWorkLimits,
} from "./password-work";
import type { PasswordHashing, PasswordStrengthModules } from "./passwords";
import {
  account,
  apiKeysContributor,
  limiterCountsContributor,
  sessionsContributor,
} from "./privacy";
import type { ReadingsQuiet } from "./readings-upkeep";
import { refreshSuccessors } from "./refresh-successor";
import { AuthService } from "./service";

export interface AuthFeatureOptions {
  /** argon2id cost; Bun's defaults when absent. Tests lower it. */
  passwordHashing?: PasswordHashing;
  /** How long readings of another version must stay unchanged before they are written again (./readings-upkeep.ts); tests shorten it. */
  readingsQuiet?: ReadingsQuiet;
  /** How many hashes run and wait at once (./password-work.ts); a slot and 8 waiting a core. */
  passwordWork?: PasswordWorkLimits;
  /** Prepare the unknown-email login's dummy hash now (default true; the CLI serves no logins). */
  prepareLogin?: boolean;
  /**
   * Registrations wait (503) until the start has looked at the readings (`keepReadings` with
   * `atStart`): a start (src/index.ts) does so once it is over. Off for the CLI and tests.
   */
  registrationsAfterReadings?: boolean;
  /** How zxcvbn is loaded at the first registration (tests make it fail). */
  loadPasswordStrength?: () => Promise<PasswordStrengthModules>;
  /**
   * Make the stored bootstrap keys match API_KEYS (default true). Only a start does: a CLI command
   * run from a shell whose environment lacks API_KEYS would otherwise revoke every bootstrap key,
   * for good (a revoked bootstrap key stays revoked).
   */
  reconcileBootstrapKeys?: boolean;
  /**
   * With `reconcileBootstrapKeys`: only check API_KEYS against the stored keys now (what would be
   * refused), and make the changes when `applyBootstrapKeys` is called — by a start once it
   * listens, so a start refused later (a port taken) has revoked no key of the running processes
   * on the file (probe 89c F1).
   */
  deferBootstrapKeys?: boolean;
}

export interface AuthFeature extends Feature {
  service: AuthService;
  apiKeys: ApiKeyService;
  /** Makes the stored bootstrap keys match API_KEYS, when the start deferred it (once). */
  applyBootstrapKeys(): void;
  /**
   * A credential as the database reads it now rather than the caches a revocation made in another
   * process reaches within a second: still an admin's (a key that grants `admin`, not revoked or
   * expired, under its owner's role today; a session not ended by logout, refresh-token reuse,
   * erasure or demotion), or still valid at all (a key whatever its scopes; a session not ended).
   */
  standing: CredentialStanding;
  /** The account row, for the privacy feature: its profile and its deletion. */
  account: ReturnType<typeof account>;
}

export function authFeature(core: Core, options: AuthFeatureOptions = {}): AuthFeature {
  const { config, db, clock, logger, audit, limiter, ipBlocks, credentials } = core;
  const sqlite = db.$client;
  const refuseTestKeys = config.appEnv === "production";
  const { credentialSeal: seal } = core;
  const apiKeys = new ApiKeyService(sqlite, clock, audit, credentials, {
    refuseTestKeys,
    seal,
    secretValues: config.secretValues,
  });
  const service = new AuthService({
    sqlite,
    config,
    clock,
    logger,
    audit,
    limiter,
    ipBlocks,
    credentials,
    apiKeys,
    seal,
    successorOf: refreshSuccessors(config.audit.secretKey),
    signingKey: core.signingKeys.current,
    passwordHashing: options.passwordHashing,
    readingsQuiet: options.readingsQuiet,
    passwordWork: createPasswordWork(
      options.passwordWork ?? defaultPasswordWorkLimits(),
      core.metrics.auth.passwordWorkRefused,
    ),
    prepareLogin: options.prepareLogin,
    registrationsAfterReadings: options.registrationsAfterReadings,
    loadPasswordStrength: options.loadPasswordStrength,
    rateLimitMetrics: core.metrics.rateLimit,
  });
  const reconciling = options.reconcileBootstrapKeys !== false;
  if (reconciling && options.deferBootstrapKeys) apiKeys.checkBootstrap(core.config.apiKeys);
  else if (reconciling) reconcileBootstrapKeys(core, apiKeys);
  let bootstrapApplied = !reconciling || !options.deferBootstrapKeys;
  const sessionLive = ({ familyId, id, role }: Extract<Principal, { kind: "user" }>) =>
    credentials.sessionLive(familyId, id, role);

  return {
    name: "auth",
    service,
    apiKeys,
    applyBootstrapKeys: () => {
      if (bootstrapApplied) return;
      bootstrapApplied = true;
      reconcileBootstrapKeys(core, apiKeys);
    },
    // A session is an admin's while it lives: a demotion ends it.
    standing: {
      stillAdmin: (principal) =>
        principal.kind === "key" ? apiKeys.grants(principal.id, "admin") : sessionLive(principal),
      stillValid: (principal) =>
        principal.kind === "key" ? apiKeys.verifies(principal.id) : sessionLive(principal),
    },
    account: account(db, service),
    routeClasses: authRouteClasses,
    routes: ({ auth }) =>
      authModule({
        service,
        auth,
        enforceLimits: core.enforceLimits,
        policies: core.policies,
        metrics: core.metrics.auth,
        requireTls: config.requireTls,
        enumerationResistance: config.enumerationResistance,
        issueCsrf: createCsrfIssuer({
          secretKey: config.csrf.secretKey,
          requireTls: config.requireTls,
          clock,
        }),
      }),
    // Logins are answered once the unknown-email dummy hash exists: /ready answers when it does.
    readiness: { logins: () => service.prepared() },
    maintenance: (now) => {
      service.pruneSessions(now);
      // Accounts another release's process wrote since (./readings-upkeep.ts; probe 95a F1).
      service.keepReadings();
    },
    privacy: [
      sessionsContributor(db, service, seal),
      apiKeysContributor(apiKeys),
      limiterCountsContributor(db),
    ],
  };
}

/** API_KEYS is the truth for bootstrap keys: added, re-scoped and revoked to match it. */
function reconcileBootstrapKeys(core: Core, apiKeys: ApiKeyService): void {
  const { config, logger } = core;
  const bootstrap = apiKeys.reconcileBootstrap(config.apiKeys);
  if (bootstrap.added + bootstrap.updated + bootstrap.revoked > 0) {
    const { added, updated, revoked } = bootstrap;
    logger.info({ added, updated, revoked }, "bootstrap API keys reconciled with API_KEYS");
  }
  if (bootstrap.prefixesReplaced > 0) {
    logger.info(
      { keys: bootstrap.prefixesReplaced },
      "API keys of no pal_ shape are now found by their hash: their first characters are no longer stored (copies of the database file made before still hold them)",
    );
  }
  if (bootstrap.stillRevoked.length > 0) {
    logger.warn(
      { entries: bootstrap.stillRevoked },
      "API_KEYS lists keys that were revoked; they stay revoked: remove them from API_KEYS",
    );
  }
}
