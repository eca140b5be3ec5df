/**
 * The stages that read cookies (auth's session cookie, CSRF's double submit, the refresh route)
 * read the Cookie header themselves; Elysia does not parse cookies for them. Each spelling of the
 * header a browser or client may send must still reach them the same way.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { STRONG_PASSWORD, signUp } from "../../support/auth";
import { cookiesOf, type Jar } from "../../support/cookies";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** The ways a Cookie header may be written around the same cookies. */
const SPELLINGS: [string, (jar: Jar) => string][] = [
  [
    "'; ' between cookies",
    (jar) =>
      Object.entries(jar)
        .map(([k, v]) => `${k}=${v}`)
        .join("; "),
  ],
  [
    "';' without a space",
    (jar) =>
      Object.entries(jar)
        .map(([k, v]) => `${k}=${v}`)
        .join(";"),
  ],
  [
    "spaces around names and values",
    (jar) =>
      Object.entries(jar)
        .map(([k, v]) => `  ${k} =  ${v} `)
        .join(" ;"),
  ],
  [
    "other cookies around ours, reversed order, a trailing ';'",
    (jar) =>
      [
        "theme=dark",
        ...Object.entries(jar)
          .reverse()
          .map(([k, v]) => `${k}=${v}`),
        "flag",
        "",
      ].join("; "),
  ],
];

async function cookieSession(target: TestApp): Promise<Jar> {
  const { email } = await signUp(target);
  const login = await send(target, "/api/auth/login?mode=cookie", {
    body: { email, password: STRONG_PASSWORD },
    peer: "10.77.0.1",
  });
  expect(login.status).toBe(200);
  return cookiesOf(login);
}

describe.each(SPELLINGS)("Cookie header with %s", (_label, spell) => {
  test("the session cookie signs in, CSRF issues and checks, and the refresh cookie rotates", async () => {
    current = buildTestApp();
    const jar = await cookieSession(current);

    const me = await send(current, "/api/auth/me", { headers: { cookie: spell(jar) } });
    expect(me.status).toBe(200);

    const csrf = await send(current, "/api/auth/csrf", { headers: { cookie: spell(jar) } });
    expect(csrf.status).toBe(200);
    const { token } = (await csrf.json()) as { token: string };
    const withCsrf = { ...jar, ...cookiesOf(csrf) };

    // The double submit is read from this spelling: a header that differs from the cookie fails.
    const forged = await send(current, "/api/auth/refresh", {
      method: "POST",
      headers: { cookie: spell(withCsrf), "x-csrf-token": `${token}x` },
    });
    expect(forged.status).toBe(403);
    expect(((await forged.json()) as { code: string }).code).toBe("CSRF_FAILED");

    const refreshed = await send(current, "/api/auth/refresh", {
      method: "POST",
      headers: { cookie: spell(withCsrf), "x-csrf-token": token },
    });
    expect(refreshed.status).toBe(200);
    const rotated = cookiesOf(refreshed);
    expect(rotated.palisade_refresh).toBeDefined();
    expect(rotated.palisade_refresh).not.toBe(jar.palisade_refresh);
  });
});

test("a refresh cookie alone, without the CSRF pair, is refused in every spelling", async () => {
  current = buildTestApp();
  const jar = await cookieSession(current);
  for (const [, spell] of SPELLINGS) {
    const response = await send(current, "/api/auth/refresh", {
      method: "POST",
      headers: { cookie: spell({ palisade_refresh: jar.palisade_refresh! }) },
    });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { code: string }).code).toBe("CSRF_FAILED");
  }
});
