/**
 * @module
 * TypeBox helpers whose JSON Schema is also valid OpenAPI 3.1.
 *
 * Elysia's `t.Nullable(x)` is `anyOf: [x, {type: "null"}]` plus `nullable: true`, a keyword that
 * OpenAPI 3.1 does not have (3.0 did); @elysiajs/openapi turns the anyOf into
 * `type: [x, "null"]` but keeps the stray keyword, which strict linters refuse. `Nullable` is the
 * same union without it: it validates the same values and has the same static type.
 */
import { type TSchema, t } from "elysia";

export const Nullable = <T extends TSchema>(schema: T) => t.Union([schema, t.Null()]);
