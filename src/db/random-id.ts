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
