/**
 * @module
 * What a CLI command is: a name, a one-line summary, its usage, and a function that takes parsed
 * arguments and the means to reach config and database. Commands print with `out` and return an
 * exit code; a CliError is a one-line failure with its own code.
 */
import type { Config } from "../config";
import type { AppDatabase } from "../db/client";
import type { Services } from "../services";

export interface ParsedArgs {
  positional: string[];
  flags: Record<string, string | true>;
  /** Options given more than once (each kept only at its last value). */
  repeated: string[];
  /** Options that take a value given none (`--expires` last, or before another option). */
  missingValue: string[];
  /** Options that take no value given one (`--json=false`). */
  valueless: string[];
}

export interface CommandContext {
  /** The validated configuration; loading it may throw a ConfigError. */
  config(): Readonly<Config>;
  /** The migrated database at DATABASE_PATH, opened on first use and closed after the command. */
  db(): AppDatabase;
  /** The app's services on that database (accounts, keys, blocks, audit), as the server has them. */
  services(): Services;
  out(line: string): void;
  /** A warning for the operator, on stderr (the command's output stays parseable). */
  err(line: string): void;
  /** Standard input, for secrets that must not appear in argv or shell history. */
  readStdin(): Promise<string>;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  /**
   * What the command does with the database at DATABASE_PATH: `reads` (the default) an existing
   * one, refusing a path that names no file or a file that is not Palisade's, since neither may
   * read as an empty deployment (cli/database-file.ts); `makes` one when there is none (the first
   * admin, a key before the first start, the migrations); `none` (it reads only the configuration).
   */
  database?: "reads" | "makes" | "none";
  run(args: ParsedArgs, context: CommandContext): Promise<number> | number;
}

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILED,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/**
 * `--name value`, `--name=value` and bare `--flag`; anything else is positional. With `takesValue`
 * (the command's options, from its usage line) a flag that takes no value never takes the next
 * word (it stays a positional, and is refused as one), and an option that takes one but has none
 * is noted in `missingValue`; without it, the next word is a value unless it starts with `--`.
 */
export function parseArgs(
  argv: readonly string[],
  takesValue?: (name: string) => boolean | undefined,
): ParsedArgs {
  const positional: string[] = [];
  // No prototype: `--__proto__ x` is an option like any other (and refused as unknown), never a
  // write to the object's prototype that vanishes.
  const flags: Record<string, string | true> = Object.create(null);
  const repeated: string[] = [];
  const missingValue: string[] = [];
  const valueless: string[] = [];
  const set = (name: string, value: string | true) => {
    if (Object.hasOwn(flags, name) && !repeated.includes(name)) repeated.push(name);
    flags[name] = value;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const body = arg.slice(2);
    const equals = body.indexOf("=");
    const name = equals >= 0 ? body.slice(0, equals) : body;
    const valued = takesValue?.(name);
    if (equals >= 0) {
      set(name, body.slice(equals + 1));
    } else if (valued !== false && argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("--")) {
      set(name, argv[++i]!);
    } else {
      set(name, true);
    }
    const value = flags[name];
    if (valued === true && (value === true || value === "") && !missingValue.includes(name)) {
      missingValue.push(name);
    }
    if (valued === false && value !== true && !valueless.includes(name)) valueless.push(name);
  }
  return { positional, flags, repeated, missingValue, valueless };
}

/** A usage line's words after the command's name, its brackets (optional parts) dropped. */
function usageWords(command: Pick<Command, "usage">): string[] {
  return command.usage.replace(/[[\]]/g, " ").split(/\s+/).filter(Boolean).slice(1);
}

/**
 * The options a command's usage line names, each with whether it takes a value (`--email E`,
 * `--env live|test`: a word follows it) or not (`--json`, `--yes`, `[--password-stdin]`), and
 * `--help`, which takes none.
 */
export function optionsOf(command: Pick<Command, "usage">): Map<string, boolean> {
  const words = usageWords(command);
  const options = new Map<string, boolean>([["help", false]]);
  words.forEach((word, index) => {
    const match = /^--([a-z][a-z-]*)$/.exec(word);
    if (!match) return;
    const next = words[index + 1];
    options.set(match[1]!, next !== undefined && !next.startsWith("--"));
  });
  return options;
}

/**
 * How many positional arguments a command's usage line names (`keys:revoke ID`, `db:backup PATH`):
 * its upper-case words that are not an option's value (`--email E`).
 */
export function positionalsOf(command: Pick<Command, "usage">): number {
  const words = usageWords(command);
  return words.filter((word, index) => /^[A-Z]+$/.test(word) && !words[index - 1]?.startsWith("--"))
    .length;
}

/**
 * An argument opening with a dash that is not `--` (a positional never starts with `--`): `-role`,
 * or any dash pasted from a document (en, em, hyphen, full-width: Unicode's dash punctuation, and
 * the minus sign), also behind spaces or invisible format characters (a soft hyphen).
 */
const DASHED = /^[\s\p{Cf}]*[\p{Pd}\u2212]/u;

/**
 * Why `args` cannot be run by `command`, or null: an option it does not take (a typo such as
 * `--rol admin` would otherwise make a plain user and exit 0), one given twice (which of two
 * emails was meant?), an argument that looks like an option but is not spelt `--` (`-role`,
 * `—role`), or more arguments than it takes (`keys:revoke A B` revoked A alone).
 */
export function misuseOf(
  command: Pick<Command, "usage">,
  args: ParsedArgs,
  known: ReadonlyMap<string, boolean> = optionsOf(command),
): string | null {
  const unknown = Object.keys(args.flags).find((name) => !known.has(name));
  if (unknown !== undefined) return `unknown option --${unknown}`;
  if (args.repeated.length > 0) return `--${args.repeated[0]} is given more than once`;
  if (args.missingValue.length > 0) return `--${args.missingValue[0]} needs a value`;
  if (args.valueless.length > 0) return `--${args.valueless[0]} takes no value`;
  const dashed = args.positional.find((argument) => DASHED.test(argument));
  if (dashed !== undefined) return `"${dashed}" is not an option: options are written --name`;
  const takes = positionalsOf(command);
  if (args.positional.length > takes) {
    return takes === 0
      ? `takes no arguments besides its options, and was given "${args.positional[0]}"`
      : `takes ${takes} argument${takes === 1 ? "" : "s"}, and was given ${args.positional.length}`;
  }
  return null;
}

/** A string flag's value, or a usage error naming it. */
export function requireFlag(args: ParsedArgs, name: string): string {
  const value = args.flags[name];
  if (typeof value !== "string" || value === "") {
    throw new CliError(`--${name} is required`, EXIT_USAGE);
  }
  return value;
}

/**
 * A required text flag held to the API's bound for the same field, counted as the API counts it
 * (UTF-16 units), so the CLI stores nothing the API would refuse.
 */
export function requireFlagWithin(
  args: ParsedArgs,
  name: string,
  max: number,
  /** The API's other rule for the same text (its 422's message), held to here too. */
  problemOf?: (value: string) => string | null,
): string {
  const value = requireFlag(args, name);
  if (value.length > max) {
    throw new CliError(
      `--${name} is longer than the API's ${max} (UTF-16 units: an emoji is two)`,
      EXIT_USAGE,
    );
  }
  const problem = problemOf?.(value) ?? null;
  if (problem !== null) throw new CliError(`--${name}: ${problem}`, EXIT_USAGE);
  return value;
}

/** `--flag N`: decimal digits only (`Number` would read `0x10` or `1e1`), from 1 to `max`. */
export function wholeNumberFlag(flag: string, raw: unknown, max: number): number {
  const value = typeof raw === "string" && /^[0-9]{1,9}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(value >= 1 && value <= max)) {
    throw new CliError(`--${flag} must be a whole number from 1 to ${max}`, EXIT_USAGE);
  }
  return value;
}

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `45m`, `12h`, `30d` in milliseconds, at most `maxDays` (the API's bound for the same thing: past
 * the range of a date, a row was written and then every listing of it failed).
 */
export function parseDuration(flag: string, raw: string, maxDays: number): number {
  const match = /^(\d{1,9})([mhd])$/.exec(raw);
  if (!match || Number(match[1]) === 0) {
    throw new CliError(`--${flag} must look like 45m, 12h or 30d`, EXIT_USAGE);
  }
  const ms = Number(match[1]) * UNIT_MS[match[2]!]!;
  if (ms > maxDays * UNIT_MS.d!) {
    throw new CliError(`--${flag} is at most ${maxDays}d`, EXIT_USAGE);
  }
  return ms;
}
