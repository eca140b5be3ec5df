/**
 * @module
 * The JSON body as the client sent it, checked against the route's schema with no leniency.
 *
 * Elysia validates a body after changing it: `t.Integer`/`t.Numeric` accept numeric strings
 * ("1000", "0x3e8", " 1e3 ") and convert them, unknown properties are dropped, and a body that is
 * not an object (`[…]`, `100`, `null`) can slip past an optional object schema and reach the
 * handler as "no fields". Each of these has turned a client's mistake into a different payment.
 * So every route that declares a body schema gets its sent body checked: the value the request
 * guard parsed, checked there before Elysia's validation converts or cleans it (one parse, not a
 * second one of the text), and refused here, after authentication (an anonymous caller still
 * gets 401 first) and Elysia's own validation, before the handler:
 * - it must be of the schema's type: an object where the schema is an object;
 * - JSON numbers only where the schema says integer or number (query strings still coerce);
 * - no property the schema does not name, at any depth (objects are closed unless a schema sets
 *   `additionalProperties` itself);
 * Refusals are 422 VALIDATION_FAILED naming the first offending field.
 *
 * A body for a route with a schema is also refused when it is read (with malformed and too deeply
 * nested ones, before authentication) if it holds a key named like a member of Object.prototype
 * (`__proto__`, `constructor`, `toString`, `valueOf`, `hasOwnProperty`, …) or `prototype`
 * anywhere: a later copy drops `__proto__` or reads it as the prototype, and an object whose
 * `toString` is a string breaks whatever turns it into text — Elysia's own validation message did,
 * answering 500 to `{"email":{"toString":"x"}}`. Routes without a schema (the signed webhooks,
 * whose bodies only their provider can send, and would resend forever if refused) are exempt.
 */

import { TransformKind, type TSchema } from "@sinclair/typebox";
import { type TypeCheck, TypeCompiler } from "@sinclair/typebox/compiler";
import { Elysia } from "elysia";
import { AppError } from "../../errors";
import { echoedField, pathName } from "../error-handler/field-name";
import { IMPRECISE_NUMBER, MAX_BODY_DEPTH } from "../request-guard/body";
import { routeLookup } from "../route-lookup";

export interface RouteBody {
  method: string;
  path: string;
  hooks?: { body?: unknown };
}

export interface StrictBodyOptions {
  /** The app's registered routes (read once, at the first request with a body). */
  routes: () => readonly RouteBody[];
}

/** Keys named like Object.prototype's members, and `prototype`: never kept as sent. */
export const RESERVED_KEYS: ReadonlySet<string> = new Set([
  ...Object.getOwnPropertyNames(Object.prototype),
  "prototype",
]);

const NUMERIC_TYPES = new Set(["integer", "number"]);

type Schema = TSchema & Record<string, unknown>;

/**
 * The schema without Elysia's leniency: a `t.Integer`/`t.Numeric` (a transform over "numeric
 * string or number") becomes its number member, and objects are closed unless they say otherwise.
 */
export function strictSchemaOf(schema: Schema): Schema {
  if (TransformKind in schema && Array.isArray(schema.anyOf)) {
    const numeric = (schema.anyOf as Schema[]).find((member) =>
      NUMERIC_TYPES.has(member.type as string),
    );
    if (numeric) return { ...numeric } as Schema;
  }
  const strict: Schema = { ...schema };
  if (schema.type === "object" && schema.properties) {
    const properties: Record<string, Schema> = {};
    for (const [name, property] of Object.entries(schema.properties as Record<string, Schema>)) {
      properties[name] = strictSchemaOf(property);
    }
    strict.properties = properties;
    if (schema.additionalProperties === undefined) strict.additionalProperties = false;
    // A property with a default may be absent: Elysia fills it in after this check.
    if (Array.isArray(schema.required)) {
      const declared = schema.properties as Record<string, Schema>;
      strict.required = (schema.required as string[]).filter(
        (name) => !(declared[name] && "default" in declared[name]),
      );
    }
  }
  if (schema.patternProperties) {
    const patterns: Record<string, Schema> = {};
    for (const [pattern, value] of Object.entries(
      schema.patternProperties as Record<string, Schema>,
    )) {
      patterns[pattern] = strictSchemaOf(value);
    }
    strict.patternProperties = patterns;
  }
  if (schema.items && typeof schema.items === "object" && !Array.isArray(schema.items)) {
    strict.items = strictSchemaOf(schema.items as Schema);
  }
  for (const key of ["anyOf", "allOf", "oneOf"] as const) {
    if (Array.isArray(schema[key])) {
      strict[key] = (schema[key] as Schema[]).map((member) => strictSchemaOf(member));
    }
  }
  return strict;
}

/** The keys a parsed JSON value's objects hold, at every depth (array indices are none). */
interface HeldKeys {
  count: number;
  /** The path of the first reserved key, or null. */
  reserved: string | null;
}

/** One walk of the parsed body for both key checks (the guard refused bodies nested too deep). */
function heldKeys(
  value: unknown,
  path = "",
  depth = 0,
  held: HeldKeys = { count: 0, reserved: null },
) {
  if (value === null || typeof value !== "object" || depth > MAX_BODY_DEPTH) return held;
  const isArray = Array.isArray(value);
  for (const key of Object.keys(value)) {
    if (!isArray) {
      held.count++;
      if (held.reserved === null && RESERVED_KEYS.has(key)) {
        held.reserved = `${path}/${pathName(key)}`;
      }
    }
    const inner = (value as Record<string, unknown>)[key];
    if (inner !== null && typeof inner === "object")
      heldKeys(inner, `${path}/${pathName(key)}`, depth + 1, held);
  }
  return held;
}

function refuse(field: string, message: string): never {
  throw new AppError("VALIDATION_FAILED", "The request body is invalid.", [{ field, message }]);
}

/**
 * Throws 422 VALIDATION_FAILED when a JSON body holds a reserved key anywhere (see above), then
 * when its text repeats a key in one object: `keysSent`, the keys the text spells out, is more than
 * the parsed value holds. JSON.parse keeps the last (`{"amount":"1000","amount":1000}` is 1000),
 * so what checked the first one (a filter in front, a log) and what acts on the last would read two
 * bodies, as with a repeated query parameter. Which key it was is not worked out: the text is
 * refused whole. So is a text that writes a number JSON.parse reads as another (`keysSent` is
 * IMPRECISE_NUMBER: request-guard/body.ts).
 */
export function refuseKeysAsSent(sent: unknown, keysSent: number): void {
  const held = heldKeys(sent);
  if (held.reserved !== null) {
    refuse(
      echoedField("body", held.reserved.slice(0, held.reserved.lastIndexOf("/"))),
      "Reserved key: names of Object.prototype's members (__proto__, constructor, toString, …) and prototype are refused",
    );
  }
  if (keysSent === IMPRECISE_NUMBER) {
    refuse(
      "body",
      "A number is written with more digits than it is read with, or is out of range (at most 15 significant digits, a double's shortest spelling, or its exact value)",
    );
  }
  if (held.count !== keysSent) refuse("body", "A key is repeated within one object");
}

/** Throws 422 VALIDATION_FAILED naming the first way the sent body breaks the strict schema. */
export function checkSentBody(check: TypeCheck<TSchema>, sent: unknown): void {
  if (check.Check(sent)) return;
  const first = check.Errors(sent).First();
  if (!first) refuse("body", "Invalid body");
  // An unknown property is reported on its parent; name it when it is a plain word.
  if (first.schema.additionalProperties === false && sent !== null && typeof sent === "object") {
    const parent = first.path === "" ? sent : valueAt(sent, first.path);
    const allowed = Object.keys((first.schema.properties as object | undefined) ?? {});
    // An array is no object with unknown keys `0`, `1`…: it is of the wrong type (probe 90e F1).
    const extra =
      parent !== null && typeof parent === "object" && !Array.isArray(parent)
        ? Object.keys(parent).find((key) => !allowed.includes(key))
        : undefined;
    if (extra !== undefined) {
      refuse(echoedField("body", `${first.path}/${pathName(extra)}`), "Unknown field");
    }
  }
  refuse(echoedField("body", first.path), first.message);
}

function valueAt(value: unknown, pointer: string): unknown {
  let current = value;
  for (const part of pointer.split("/").slice(1)) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<string, unknown>)[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  return current;
}

/**
 * Checks a body as sent against its route's strict schema: the refusal to raise (a 422
 * AppError), or undefined when it passes or the route declares no body schema. A reserved key, or
 * a key repeated in one object (`keysSent`, the keys its text spells out, is more than the parsed
 * value holds), is thrown at once.
 */
export type SentBodyCheck = (
  method: string,
  route: string,
  sent: unknown,
  keysSent: number,
) => unknown;

/**
 * The check the request guard runs on the value it has just parsed, before Elysia's validation
 * converts or cleans it (one parse, not a second one of the text).
 */
export function createSentBodyCheck({ routes }: StrictBodyOptions): SentBodyCheck {
  const checkFor = routeLookup(routes, (entry): TypeCheck<TSchema> | undefined => {
    const body = entry.hooks?.body;
    if (body === null || typeof body !== "object" || !("type" in body || "anyOf" in body)) {
      return undefined;
    }
    return TypeCompiler.Compile(strictSchemaOf(body as unknown as Schema));
  });
  return function checkBodyAsSent(method, route, sent, keysSent) {
    const check = checkFor(method, route);
    if (check === undefined) return undefined;
    // Now, not at its place in the order: Elysia's validation, which runs first, would throw on it.
    refuseKeysAsSent(sent, keysSent);
    try {
      checkSentBody(check, sent);
      return undefined;
    } catch (refusal) {
      return refusal;
    }
  };
}

/** Where the request guard leaves what the check found, for the hook below to raise. */
export interface SentBodyState {
  sentBodyRefusal?: unknown;
}

/**
 * Raises the refusal the check found, before the handler: after auth (an anonymous caller gets
 * 401 first) and after Elysia's own validation errors, where the check ran when it parsed the
 * text again. Not a `transform` hook: Elysia (1.4) serves a route whose handler is a plain
 * Response (the docs page) without any of its hooks once parse, transform, beforeHandle and
 * afterHandle hooks all exist.
 */
export function strictBody() {
  return new Elysia({ name: "palisade.strict-body" })
    .onBeforeHandle(function refuseBodyAsSent(context) {
      const { sentBodyRefusal } = context as unknown as SentBodyState;
      if (sentBodyRefusal !== undefined) throw sentBodyRefusal;
    })
    .as("global");
}
