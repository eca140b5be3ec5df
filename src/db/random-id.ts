/**
 * @module
 * Row ids drawn at random rather than from SQLite's AUTOINCREMENT sequence, for rows whose id is
 * in their seal or must never be reused: the sequence is the file's to say, and someone who can
 * write the file can push it past what JavaScript counts exactly (ids read back rounded, a seal over
 * the wrong id, an update of the wrong row) or to its end (every insert failing). A drawn id
 * depends on nothing in the file; drawing it writes nothing.
 */

/** A random id in [1, 2^53): 53 bits, exact as a JavaScript number. */
export function randomRowId(): number {
  const [high, low] = crypto.getRandomValues(new Uint32Array(2)) as unknown as [number, number];
  return (high >>> 11) * 2 ** 32 + low || 1;
}

/**
 * Runs `insert` with drawn ids until one is taken (`insert` answers the row, or null or undefined
 * when the id was a row's already: `ON CONFLICT DO NOTHING`). An id of the file's is drawn again
 * (with 53 bits, never in practice); an insert ignored three times is something written into the
 * file, not chance, and `ignored` is thrown.
 */
export function insertWithRandomId<Row>(
  insert: (id: number) => Row | null | undefined,
  ignored: () => Error,
): Row {
  for (let draw = 0; draw < 3; draw++) {
    const row = insert(randomRowId());
    if (row != null) return row;
  }
  throw ignored();
}
