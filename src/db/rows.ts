/**
 * @module
 * A prepared select's first row, read as a tuple and named here. Drizzle's own row mapping (an
 * entity check and a decoder per column) measured 10–14 µs per call on the API-key lookup, a third
 * of the lookup itself; naming a tuple costs well under one. Only for selects of plain columns
 * (integer, text, enum text): no column here may need a decoder (timestamps, JSON, booleans).
 */

interface PreparedSelect<Row> {
  get(placeholders?: Record<string, unknown>): Row | undefined;
  values(placeholders?: Record<string, unknown>): unknown[][];
}

/**
 * Reads `query`'s first row with the field names of `fields`, the object the select was built
 * with (Drizzle selects the columns in that object's order). Typed as the query's own rows.
 */
export function firstRowReader<Row>(
  query: PreparedSelect<Row>,
  fields: Record<string, unknown>,
): (placeholders: Record<string, unknown>) => Row | undefined {
  const names = Object.keys(fields);
  return (placeholders) => {
    const tuple = query.values(placeholders)[0];
    if (tuple === undefined) return undefined;
    const row: Record<string, unknown> = {};
    for (let i = 0; i < names.length; i++) row[names[i]!] = tuple[i];
    return row as Row;
  };
}
