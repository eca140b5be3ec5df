/**
 * @module
 * An error as the one line an operator reads: its message's first line, since a driver's message
 * can go on with a stack or a source listing that no log line, CLI answer or health report should
 * carry.
 */

/** An error's message, its first line only; a thrown value that is not an Error, as text. */
export function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split("\n", 1)[0] ?? "";
}

/** An error as one line, its name first: `SQLiteError: database or disk is full`. */
export function namedFirstLine(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${firstLine(error)}` : firstLine(error);
}
