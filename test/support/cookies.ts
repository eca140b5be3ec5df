/** A browser's cookie jar, as far as tests need one: what a response sets, and what to send back. */

export type Jar = Record<string, string>;

/** The cookies a response sets, by name (the value up to its attributes, `=` within it kept). */
export function cookiesOf(response: Response): Jar {
  const jar: Jar = {};
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const equals = pair!.indexOf("=");
    jar[pair!.slice(0, equals)] = pair!.slice(equals + 1);
  }
  return jar;
}

/** A Cookie header carrying the jar, as browsers write it. */
export const cookieHeader = (jar: Jar) =>
  Object.entries(jar)
    .map(([name, value]) => `${name}=${value}`)
    .join("; ");
