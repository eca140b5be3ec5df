/**
 * @module
 * A line's fields as JSON text (`,"key":value` each), with credentials censored by name. The
 * names are pino's redact paths, which the lines kept when pino went:
 *
 * - `password`, `accessToken`, `refreshToken`, `apiKey` at the top: the whole value;
 * - those and `token`, `secret` one level down (`*.password`: `body.password`, …);
 * - under `headers` also `authorization`, `cookie`, `set-cookie`, `x-api-key`, `x-csrf-token`.
 *
 * A name present with no value is censored too; deeper names and array items are not (the
 * scrubber still sees the whole line). The object logged is never changed: a censored value is
 * written from a shallow copy. `err` is serialised as an error (serialize-error.ts).
 *
 * A field JSON cannot write does not lose the line: a cycle is written as `"[Circular]"` where it
 * closes, a bigint as its digits, and a field whose getter or `toJSON` throws as
 * `"[unserializable]"` (pino threw the getter's error at the caller).
 */
import { serializeError } from "./serialize-error";

export const REDACTED = "[REDACTED]";
const REDACTED_JSON = JSON.stringify(REDACTED);
const UNSERIALIZABLE_JSON = '"[unserializable]"';

const TOP_LEVEL = new Set(["password", "accessToken", "refreshToken", "apiKey"]);
const ONE_LEVEL_DOWN = ["password", "accessToken", "refreshToken", "token", "secret", "apiKey"];
const UNDER_HEADERS = [
  "authorization",
  "cookie",
  "set-cookie",
  "x-api-key",
  "x-csrf-token",
  ...ONE_LEVEL_DOWN,
];

const { hasOwn } = Object;
/** JSON.rawJSON (Bun has it; TypeScript's lib does not know it yet). */
const rawJson = (JSON as unknown as { rawJSON(text: string): unknown }).rawJSON;

/** `value` with each of `names` it has as its own field replaced, or `value` itself. */
function censored(value: object, names: readonly string[]): object {
  if (Array.isArray(value) || !names.some((name) => hasOwn(value, name))) return value;
  const copy = Object.create(Object.getPrototypeOf(value)) as Record<string, unknown>;
  for (const key in value) {
    if (hasOwn(value, key)) {
      copy[key] = names.includes(key) ? REDACTED : (value as Record<string, unknown>)[key];
    }
  }
  return copy;
}

/** JSON.stringify that survives cycles and bigints (the slow path, after it threw). */
function tolerantJson(value: unknown): string | undefined {
  const ancestors: unknown[] = [];
  return JSON.stringify(value, function replace(this: unknown, _key, field: unknown) {
    if (typeof field === "bigint") return rawJson(field.toString());
    if (typeof field !== "object" || field === null) return field;
    while (ancestors.length > 0 && ancestors.at(-1) !== this) ancestors.pop();
    if (ancestors.includes(field)) return "[Circular]";
    ancestors.push(field);
    return field;
  });
}

function objectJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return tolerantJson(value);
  }
}

/** One field's value as JSON, or undefined when the field is left out. */
export function fieldJson(key: string, raw: unknown): string | undefined {
  const value = key === "err" ? serializeError(raw) : raw;
  switch (typeof value) {
    case "undefined":
    case "function":
      return undefined;
    case "string":
      return TOP_LEVEL.has(key) ? REDACTED_JSON : JSON.stringify(value);
    case "number":
      if (TOP_LEVEL.has(key)) return REDACTED_JSON;
      return Number.isFinite(value) ? String(value) : "null";
    case "boolean":
      return TOP_LEVEL.has(key) ? REDACTED_JSON : String(value);
    default:
      if (TOP_LEVEL.has(key)) return REDACTED_JSON;
      if (typeof value === "object" && value !== null) {
        return objectJson(censored(value, key === "headers" ? UNDER_HEADERS : ONE_LEVEL_DOWN));
      }
      return objectJson(value);
  }
}

/** `,"key":value` for each own field with a value, in the object's order. */
export function fieldsJson(fields: object): string {
  let out = "";
  for (const key in fields) {
    if (!hasOwn(fields, key)) continue;
    let json: string | undefined;
    try {
      const value = (fields as Record<string, unknown>)[key];
      if (value === undefined) continue;
      json = fieldJson(key, value);
    } catch {
      json = UNSERIALIZABLE_JSON;
    }
    if (json !== undefined) out += `,${JSON.stringify(key)}:${json}`;
  }
  return out;
}
