/**
 * @module
 * Which part of a failing field's path a 422 may name. A path can hold names the client chose (an
 * unknown field's, a key of `metadata`): those are echoed only when they are plain words, so an
 * error never carries markup, controls or a 3,000-character key back (probe 75c N2, 84c F1).
 */

/**
 * A name fit to echo: letters, digits, `_` and `-` (a header's name), at most 40 (array indices
 * are digits).
 */
const ECHOABLE = /^[A-Za-z0-9_-]{1,40}$/;

/** Whether a name the client chose (a key, a header's name) may be quoted back to it. */
export function isEchoable(name: string): boolean {
  return ECHOABLE.test(name);
}

/**
 * A key as one name of a `/`-separated path (RFC 6901's escapes, as TypeBox writes its paths): a
 * key holding `/` built by hand was read as several plain words and echoed whole (probe 84f F1).
 */
export function pathName(key: string): string {
  return key.replaceAll("~", "~0").replaceAll("/", "~1");
}

/**
 * `root` (`body`, `query`, …) and the path's names up to the first one not fit to echo: that
 * name's parent is what the error names. `path` is `/`-separated, as TypeBox's JSON pointers are.
 */
export function echoedField(root: string, path: string): string {
  const names = path.split("/");
  const shown = [root];
  // The path's own leading "/" is no name.
  for (let index = path.startsWith("/") ? 1 : 0; index < names.length; index++) {
    const name = names[index]!;
    if (!ECHOABLE.test(name)) break;
    shown.push(name);
  }
  return shown.join("/");
}
