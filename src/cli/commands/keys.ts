import { storedTimeText, storedValueText } from "../../db/stored-values";
import { MAX_KEY_DAYS } from "../../modules/admin/model";
import {
  isScope,
  KeyRefused,
  keyNameProblem,
  MAX_KEY_NAME_LENGTH,
} from "../../modules/auth/api-keys";
import type { Scope } from "../../plugins/auth/principal";
import type { Services } from "../../services";
import {
  CliError,
  type Command,
  EXIT_USAGE,
  parseDuration,
  requireFlag,
  requireFlagWithin,
} from "../command";
import { shownAddress, shownId } from "../shown";

/** A time as the file holds it: an ISO date, or the text a row written into the file holds. */
const iso = (ms: unknown) => (ms === null ? "-" : storedTimeText(ms));

/** The account `--owner-id` names, if a key may be given to it. */
function ownerById(auth: Services["auth"], id: string): { id: string; email: string } {
  const account = auth.accountForOperatorById(id);
  if (account === null) throw new CliError(`no account has the id ${id}`);
  const shown = shownAddress(account.email);
  if (account.erased) {
    throw new CliError(
      `the account of ${shown} was erased; its row is in the database file again, copied back from before its erasure (a backup): it is refused and owns no key`,
    );
  }
  if (!account.intact) {
    throw new CliError(
      `the account of ${shown} does not match its seal (it was written into the database file); it is refused and owns no key`,
    );
  }
  return { id: account.id, email: shown };
}

export const keysCreate: Command = {
  name: "keys:create",
  database: "makes",
  summary:
    "Create an API key with scopes (chat, payments, admin, metrics); the key is printed once",
  usage:
    "keys:create --name N --scopes a,b [--expires 30d] [--env live|test] [--owner EMAIL | --owner-id ID]",
  run(args, context) {
    const name = requireFlagWithin(args, "name", MAX_KEY_NAME_LENGTH, keyNameProblem);
    const scopes = requireFlag(args, "scopes")
      .split(",")
      .map((s) => s.trim());
    const unknown = scopes.filter((s) => !isScope(s));
    if (unknown.length > 0) {
      throw new CliError(
        `unknown scope ${unknown.join(", ")}; use chat, payments, admin, metrics`,
        EXIT_USAGE,
      );
    }
    const env = args.flags.env ?? "live";
    if (env !== "live" && env !== "test")
      throw new CliError("--env must be live or test", EXIT_USAGE);
    const services = context.services();
    let owner: { id: string; email: string } | null = null;
    if (typeof args.flags.owner === "string" && typeof args.flags["owner-id"] === "string") {
      throw new CliError("give one of --owner or --owner-id", EXIT_USAGE);
    }
    if (typeof args.flags["owner-id"] === "string") {
      // By id: the account an address cannot name while another account is left beside it
      // (stop 80's note: no key could be given to the holder of such an address).
      owner = ownerById(services.auth, args.flags["owner-id"]);
    } else if (typeof args.flags.owner === "string") {
      const typed = args.flags.owner;
      // An account set aside at start has an address whose key another holds: any spelling of it
      // may mean either, and the set-aside one has no key to own (probes 92a F1, 92f F3).
      const alike = services.auth.setAsideAlike(typed);
      if (alike.length > 0) {
        throw new CliError(
          `--owner: the address is also that of ${alike.map((row) => shownId(row.id)).join(", ")}, set aside at start (its address folds onto another account's): which account is meant cannot be told; see users:list, and name the account with --owner-id`,
        );
      }
      owner = services.auth.findUserByEmail(typed);
      if (!owner) throw new CliError(`no account has the email ${typed}`);
    }
    const userId = owner?.id ?? null;
    const expiresAt =
      typeof args.flags.expires === "string"
        ? services.clock.now() + parseDuration("expires", args.flags.expires, MAX_KEY_DAYS)
        : null;
    const spec = {
      name,
      scopes: [...new Set(scopes)] as Scope[],
      userId,
      expiresAt,
      environment: env as "live" | "test",
    };
    let created: ReturnType<typeof services.apiKeys.create>;
    try {
      created = services.apiKeys.create(spec, "cli");
    } catch (error) {
      if (!(error instanceof KeyRefused)) throw error;
      const refused = error.refusal;
      if (refused.code === "TEST_KEY_IN_PRODUCTION") {
        throw new CliError("--env test is refused when APP_ENV=production", EXIT_USAGE);
      }
      if (refused.code === "SCOPES_EXCEED_ROLE") {
        throw new CliError(
          `${typeof args.flags["owner-id"] === "string" ? "--owner-id" : "--owner"} is a ${refused.role}, whose keys may not hold ${refused.scopes.join(", ")}`,
          EXIT_USAGE,
        );
      }
      throw new CliError("the owner no longer exists");
    }
    const { key, record } = created;
    context.out(
      `created key ${record.id} (${record.prefix}…) scopes ${record.scopes.join(",")} expires ${iso(record.expiresAt)}${owner ? ` owner ${owner.email} (${owner.id})` : ""}`,
    );
    context.out(`key (shown once): ${key}`);
    return 0;
  },
};

export const keysList: Command = {
  name: "keys:list",
  summary: "List API keys (prefix, scopes, state, owner); never the keys themselves",
  usage: "keys:list",
  run(_args, context) {
    const { apiKeys, clock } = context.services();
    const { keys } = apiKeys.listChecked();
    if (keys.length === 0) {
      context.out("no API keys");
      return 0;
    }
    const now = clock.now();
    for (const { record: key, seals } of keys) {
      const state = seals.tampered
        ? "refused (it or its owner's account does not match its seal: written into the database file, or an erased account's copied back from a backup; db:verify says which)"
        : key.revokedAt !== null
          ? "revoked"
          : key.expiresAt !== null && key.expiresAt <= now
            ? "expired"
            : "active";
      const lineage = seals.lineageTampered
        ? "  lineage refused (does not match its seal: no payments for a key acting for no user, no rotation)"
        : "";
      // A rotated key ends only by its grace (expires), so a restored file, which holds it without
      // either, brings it back for good: the restore's comparison needs to see it (probe 84d F1).
      const rotation = seals.rotationTampered
        ? "  rotation mark refused (replaced_by does not match its seal: no rotation)"
        : key.replacedBy !== null
          ? `  replaced by ${storedValueText(key.replacedBy)}`
          : "";
      const owner =
        key.userId !== null
          ? shownAddress(key.ownerEmail)
          : key.origin === "bootstrap"
            ? "(API_KEYS)"
            : "(operator)";
      context.out(
        `${key.id}  ${storedValueText(key.prefix)}…  ${storedValueText(key.name)}  ${key.scopes.join(",")}  ${state}  owner ${owner}  expires ${iso(key.expiresAt)}  last used ${iso(key.lastUsedAt)}${lineage}${rotation}`,
      );
    }
    return 0;
  },
};

export const keysRevoke: Command = {
  name: "keys:revoke",
  summary: "Revoke an API key by id (every process stops accepting it within a second)",
  usage: "keys:revoke ID",
  run(args, context) {
    const id = args.positional[0];
    if (!id) throw new CliError("the key id is required", EXIT_USAGE);
    const { apiKeys } = context.services();
    if (!apiKeys.revoke(id, "cli")) {
      throw new CliError(`no active key has the id ${id}`);
    }
    context.out(`revoked ${id}`);
    if (apiKeys.get(id)?.origin === "bootstrap") {
      // Its row is what keeps it revoked; the variable would bring it back as a new entry.
      context.err("this key comes from API_KEYS: remove it from API_KEYS too");
    }
    return 0;
  },
};
