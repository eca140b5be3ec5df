/**
 * @module
 * What a feature still has in flight (a chat turn, a privacy export), each with how to end it
 * readably when the shutdown's drain time is up (Feature.endInFlight), rather than as a cut
 * connection the client or the log cannot tell from its own leaving.
 */
export interface EndsInFlight {
  /** Keeps `end` until the returned function forgets it (what it ends ended by itself). */
  add(end: () => void): () => void;
  /** Ends everything still in flight. */
  endAll(): void;
}

export function createEndsInFlight(): EndsInFlight {
  const ends = new Set<() => void>();
  return {
    add(end) {
      ends.add(end);
      return () => {
        ends.delete(end);
      };
    },
    endAll() {
      for (const end of [...ends]) end();
    },
  };
}
