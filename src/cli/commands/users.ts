import type { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { generateSecret } from "../../config/secrets";
import { BUSY_TIMEOUT_MS } from "../../db/client";
import { lookAt } from "../../db/file-look";
import { readingsMarks, takeReadingsMark } from "../../db/readings-mark";
import { INVALID_EMAIL_MESSAGES } from "../../modules/auth/email";
import { idsOfOtherReadings, READING_VERSION } from "../../modules/auth/readings";
import { type OperatorAccount, ReadingsBeingWritten } from "../../modules/auth/service";
import type { Role } from "../../plugins/auth/principal";
import {
  CliError,
  type Command,
  type CommandContext,
  EXIT_USAGE,
  type ParsedArgs,
  requireFlag,
} from "../command";
import { shownAddress, shownId } from "../shown";
import { terminalJson } from "../terminal";

function roleFlag(args: ParsedArgs): Role {
  const role = args.flags.role ?? "user";
  if (role !== "user" && role !== "admin") {
    throw new CliError("--role must be user or admin", EXIT_USAGE);
  }
  return role;
}

/**
 * The account `--email` or `--id` names (one of them). An address finds the account holding its
 * key; an account left beside it at start (its address collides with that one's) is named by its
 * id, and while there is one, every spelling of the address is refused, naming both (probe 92a
 * F1: its own spelling promoted or erased the account holding the key).
 */
function namedAccount(
  args: ParsedArgs,
  context: Pick<CommandContext, "services" | "err">,
): OperatorAccount {
  const { auth } = context.services();
  const { email, id } = args.flags;
  if ((typeof email === "string") === (typeof id === "string")) {
    throw new CliError("give one of --email or --id", EXIT_USAGE);
  }
  if (typeof id === "string") {
    const user = auth.accountForOperatorById(id);
    if (user) return user;
    // Its rows copied back without the account's are no account, and reached by their own command.
    if (context.services().credentialSeal.erased(`user:${id}`)) {
      throw new CliError(
        `no account has the id ${id}: the audit log records it erased; users:purge-erased deletes what the database file still holds of it`,
      );
    }
    throw new CliError(`no account has the id ${id}`);
  }
  const typed = email as string;
  const user = auth.accountForOperator(typed);
  // An account set aside at start has an address whose key another holds: any spelling of it
  // may mean either, so neither is guessed (probe 92a F1: its own spelling acted on the holder;
  // 92f F3: one spelling did, another did not).
  const alike = auth.setAsideAlike(typed);
  if (alike.length > 0) {
    const holder =
      user === null ? "" : `, and ${shownAddress(user.email)} (${shownId(user.id)}) holds it`;
    throw new CliError(
      `the address is also that of ${alike.map((row) => `${shownAddress(row.email)} (${shownId(row.id)})`).join(", ")}, set aside at start (its address folds onto another account's)${holder}: name the account with --id`,
    );
  }
  if (!user) throw new CliError(`no account has the email ${typed}`);
  return user;
}

/** Said after a command took away the last admin account (probe 35c I4, 36a F8). */
function warnIfNoAdmin(
  auth: ReturnType<CommandContext["services"]>["auth"],
  context: Pick<CommandContext, "err">,
): void {
  const admins = auth.accountsForOperator().filter((a) => a.role === "admin" && a.intact);
  if (admins.length > 0) return;
  context.err(
    "no account is an admin now: the admin routes are open to admin-scoped API keys only; promote one with users:role --role admin",
  );
}

export const usersCreate: Command = {
  name: "users:create",
  database: "makes",
  summary:
    "Create an account (--role admin for the first admin); the password is read from stdin with --password-stdin, else generated and printed once",
  usage: "users:create --email E [--role user|admin] [--password-stdin]",
  async run(args, context) {
    const email = requireFlag(args, "email");
    const role = roleFlag(args);
    const fromStdin = args.flags["password-stdin"] === true;
    // A generated password: 32 random bytes, far past any strength rule, in no credential's shape
    // (it was a refresh token's, which scanners and the log scrubber then took it for).
    const password = fromStdin ? passwordOfStdin(await context.readStdin()) : generateSecret();
    // A file with no accounts' table yet (one this command makes, or one whose first start
    // stopped before its migrations) no release serves: its mark needs no word (below).
    const servable = holdsAccountsTable(context.config().databasePath);
    const sqlite = context.db().$client;
    // Only once the account is known to be written: a refused command leaves the file as it was,
    // unmarked too (probe 96a F2: a mistyped address marked it, and stopped a release before the
    // mark serving it, with nothing written).
    let marked = false;
    const outcome = await context
      .services()
      .auth.register(email, password, null, role, {
        beforeWrite: () => {
          marked = keepFileOfThisRelease(sqlite);
        },
      })
      .catch((error: unknown) => {
        // A command writes no readings again (modules/auth/readings-upkeep.ts): a start does.
        if (error instanceof ReadingsBeingWritten) {
          throw new CliError(
            "too many accounts' readings (look-alike addresses) are of another version to check this address against them: start this release on the file, which writes them again, then retry",
          );
        }
        throw error;
      });
    switch (outcome.code) {
      case "INVALID_EMAIL":
        throw new CliError(`--email: ${INVALID_EMAIL_MESSAGES[outcome.reason]}`, EXIT_USAGE);
      case "WEAK_PASSWORD":
        throw new CliError(`the password is refused (${outcome.rule}): ${outcome.message}`);
      case "DUPLICATE":
        throw new CliError("an account with this email already exists");
      case "CREATED":
        if (marked && servable) {
          // Said, as a start says it: a release before the mark serving the file, even one with
          // no account yet, stops at its next check, and its own line blames an index it did not
          // make (probes 95e F2, 96a F3).
          context.err(
            "the file is now marked as served by this release's readings (look-alike addresses): a process of a release before the mark serving it stops at its next check, saying an index on users is not one of its migrations'",
          );
        }
        context.out(`created ${outcome.user.role} ${outcome.user.email} (${outcome.user.id})`);
        if (!fromStdin) context.out(`password (shown once): ${password}`);
        return 0;
    }
  },
};

/** Whether the file at `path` has a users table, looked at without a trace; locked, it may. */
function holdsAccountsTable(path: string): boolean {
  if (path === ":memory:" || !existsSync(path)) return false;
  try {
    return lookAt(path, BUSY_TIMEOUT_MS)?.tables.has("users") ?? false;
  } catch {
    return true;
  }
}

/**
 * `users:create` writes a reading of this release's version: the file must be this release's
 * (db/readings-mark.ts). Unmarked, it is marked now, in the registration's transaction, unless it
 * holds readings of another version: a release before the mark may be serving it, and would not see
 * this account's (probe 95d F2: its look-alike registered there, and nothing stopped that release).
 * True when it marked the file.
 */
function keepFileOfThisRelease(sqlite: Database): boolean {
  if (readingsMarks(sqlite).includes(READING_VERSION)) return false;
  if (idsOfOtherReadings(sqlite, 1).length > 0) {
    throw new CliError(
      "the accounts' readings (look-alike addresses) are another version's and the file is not yet marked as this release's: start this release on the file first (stopping every process of an older release), then retry",
    );
  }
  return !takeReadingsMark(sqlite, READING_VERSION).held;
}

export const usersRole: Command = {
  name: "users:role",
  summary: "Change an account's role; its sessions end so the new role applies at once",
  usage: "users:role [--email E] [--id ID] --role user|admin",
  run(args, context) {
    if (args.flags.role === undefined) throw new CliError("--role is required", EXIT_USAGE);
    const role = roleFlag(args);
    const { auth } = context.services();
    const user = namedAccount(args, context);
    // Said as the account holds it: the operator's spelling only found it (probe 85c F2).
    const shown = shownAddress(user.email);
    if (user.erased) {
      // Changed, it would be named in the audit log its erasure pseudonymised (probe 80a F2).
      throw new CliError(
        `the account of ${shown} was erased; its row is in the database file again, copied back from before its erasure (a backup): it is refused, and its role is not changed; erase it again with users:erase --id ${shownId(user.id)} --yes`,
      );
    }
    if (!user.intact && role === "admin") {
      throw new CliError(
        `the account of ${shown} does not match its seal (it was written into the database file); it is refused and cannot be promoted`,
      );
    }
    const changed = auth.setRole(user.id, role, "cli");
    context.out(changed ? `${shown} is now ${role}` : `${shown} was already ${role}`);
    if (changed) warnIfNoAdmin(auth, context);
    if (!user.intact) {
      // A role written into the file, put back to the one the seal was made over, leaves the row
      // as Palisade wrote it: it matches its seal again (probe 32a F1). Said as it is now.
      const after = auth.accountForOperatorById(user.id);
      context.err(
        after?.intact
          ? `the account of ${shown} did not match its seal (its role was written into the database file); with the role it was sealed with, it matches it again and can sign in: its sessions were ended`
          : `the account of ${shown} does not match its seal (it was written into the database file): its sessions were ended and it cannot sign in`,
      );
    }
    return 0;
  },
};

export const usersList: Command = {
  name: "users:list",
  summary:
    "List accounts (id, email, role, created; oldest first), to compare a restored file with the one it replaced; never password hashes",
  usage: "users:list [--role user|admin] [--json]",
  run(args, context) {
    const role = args.flags.role === undefined ? null : roleFlag(args);
    const accounts = context
      .services()
      .auth.accountsForOperator()
      .filter((account) => role === null || account.role === role);
    // A time written into the file that is no time (text, out of range) is shown as unknown.
    const when = (date: Date) => (Number.isNaN(date.getTime()) ? null : date.toISOString());
    if (args.flags.json) {
      for (const account of accounts) {
        context.out(
          terminalJson({ ...account, id: shownId(account.id), createdAt: when(account.createdAt) }),
        );
      }
      return 0;
    }
    if (accounts.length === 0) context.out("no accounts");
    for (const { id, email, role: held, createdAt, intact, setAside } of accounts) {
      // An erased account's row copied back matches its seal but is refused too (probe 80a F2).
      const refused = intact
        ? ""
        : "  refused (does not match its seal, or an erased account's copied back: db:verify says which)";
      // Its address finds another account: it is named by its id (probe 92a F1).
      const aside = setAside
        ? "  set aside (its address collides with another account's, or its key waits on a row that does not match its seal: the start's error line says which; it cannot sign in by address; name it with --id)"
        : "";
      context.out(
        // Cut as every other command shows an address (probe 94h: 3 MB written into the file).
        `${shownId(id)}  ${shownAddress(email)}  ${held}  created ${when(createdAt) ?? "unknown"}${refused}${aside}`,
      );
    }
    return 0;
  },
};

export const usersErase: Command = {
  name: "users:erase",
  summary:
    "Erase an account as DELETE /api/me does (for a user who cannot sign in to do it): sessions and API keys revoked, data deleted, audit rows pseudonymised",
  usage: "users:erase [--email E] [--id ID] --yes",
  async run(args, context) {
    const { auth, privacy } = context.services();
    const user = namedAccount(args, context);
    // Said as the account holds it: the operator's spelling only found it (probe 85c F2).
    const shown = shownAddress(user.email);
    // Irreversible: the command says what it would erase until it is told to.
    if (args.flags.yes !== true) {
      if (user.erased) {
        context.err(
          `the account of ${shown} was erased; its row is in the database file again, copied back from before its erasure (a backup): erasing it again removes what was copied back`,
        );
      } else if (!user.intact) {
        context.err(
          `the account of ${shown} does not match its seal (it was written into the database file): its address may not be its own; check that ${shownId(user.id)} is the account to erase`,
        );
      }
      throw new CliError(
        `this erases the account of ${shown} (${shownId(user.id)}) and everything held about it, for good; add --yes to erase it`,
        EXIT_USAGE,
      );
    }
    if (!(await privacy.erase(user.id, { ip: null, requestId: null, by: "operator" }))) {
      throw new CliError(`no account has the email ${shown}`);
    }
    context.out(
      `erased ${shown} (${shownId(user.id)}): sessions and API keys revoked, data deleted, audit rows pseudonymised`,
    );
    if (user.erased) {
      context.err(
        `the account of ${shown} had been erased before; what was copied back from before that erasure is erased again`,
      );
    } else if (!user.intact) {
      context.err(
        `the account of ${shown} did not match its seal (it was written into the database file); it was erased all the same`,
      );
    }
    if (user.role === "admin") warnIfNoAdmin(auth, context);
    return 0;
  },
};

/** Principals named in a line; past them, counted. */
const PRINCIPALS_NAMED = 20;

export const usersPurgeErased: Command = {
  name: "users:purge-erased",
  summary:
    "Delete what the database file holds of accounts and keys the audit log records erased (their chat conversations, messages and usage, copied back from before their erasure; db:verify names them)",
  usage: "users:purge-erased [--yes]",
  async run(args, context) {
    const { privacy } = context.services();
    const remains = privacy.erasedRemains();
    const { principals, unowned } = remains;
    if (principals.length === 0 && !unowned) {
      context.out("nothing of an erased account or key is in the database file");
      return 0;
    }
    const more = principals.length - PRINCIPALS_NAMED;
    const held = [
      ...(principals.length > 0
        ? [
            `rows of ${principals.length} erased ${principals.length === 1 ? "principal" : "principals"} (${principals.slice(0, PRINCIPALS_NAMED).join(", ")}${more > 0 ? ` and ${more} more` : ""})`,
          ]
        : []),
      ...(unowned ? ["chat messages of no conversation"] : []),
    ].join(" and ");
    if (args.flags.yes !== true) {
      throw new CliError(
        `the database file holds ${held}, copied back from before their erasure; add --yes to delete them`,
        EXIT_USAGE,
      );
    }
    await remains.purge();
    context.out(
      `deleted what the database file held: ${held}${principals.length > 0 ? "; each erasure recorded again" : ""}`,
    );
    return 0;
  },
};

export const sessionsEnd: Command = {
  name: "sessions:end",
  summary:
    "End every session of every account (after an incident or a restored backup): refresh tokens revoked, access tokens refused within a second; API keys stay",
  usage: "sessions:end --all --yes",
  run(args, context) {
    if (args.flags.all !== true) {
      throw new CliError(
        "--all is required: the command ends every account's sessions",
        EXIT_USAGE,
      );
    }
    if (args.flags.yes !== true) {
      throw new CliError(
        "this ends every session of every account: everyone signs in again; add --yes to end them",
        EXIT_USAGE,
      );
    }
    // Between two batches the service's writers, waiting for the lock, get it first.
    const { sessions, accounts } = context
      .services()
      .auth.endAllSessions("cli", () => Bun.sleepSync(10));
    const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`;
    context.out(`ended ${plural(sessions, "session")} of ${plural(accounts, "account")}`);
    return 0;
  },
};

/**
 * The password piped in: its line endings at the end are the pipe's (`echo`, a file ending in a
 * blank line), however many, as for a secret's file. A line break left inside is refused: a sign-in
 * form cannot send it, and `printf 'pw\n\n'` stored `pw\n`, an account nobody could sign in to
 * (probe 86d F4).
 */
function passwordOfStdin(read: string): string {
  const password = read.replace(/[\r\n]+$/, "");
  if (/[\r\n]/.test(password)) {
    throw new CliError("the password read from stdin must be one line");
  }
  // Nor anything else a form cannot type: a control character (a tab, NUL, UTF-16's NULs, NEL)
  // or a line or paragraph separator (probe 86e F7).
  if (/[\p{Cc}\u2028\u2029]/u.test(password)) {
    throw new CliError(
      "the password read from stdin has a control character or a line separator; send it as UTF-8 text on one line",
    );
  }
  return password;
}
