import { afterEach, expect, test } from "bun:test";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "../../support/app";
import { STRONG_PASSWORD, signUp } from "../../support/auth";
import { cookieHeader, cookiesOf } from "../../support/cookies";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("browser mode: HttpOnly strict cookies, /me by cookie, CSRF on logout, cookies cleared", async () => {
  current = buildTestApp();
  const { email } = await signUp(current);
  const login = await send(current, "/api/auth/login?mode=cookie", {
    body: { email, password: STRONG_PASSWORD },
  });
  expect(login.status).toBe(200);
  expect(await login.json()).toEqual({
    tokenType: "Cookie",
    expiresIn: 3600,
    csrfToken: expect.any(String),
  });
  const lines = login.headers.getSetCookie();
  expect(lines).toHaveLength(3);
  for (const line of lines) {
    expect(line).toContain("SameSite=Strict");
    expect(line).toContain("Path=/");
    // The CSRF cookie is the page's to read into its header; the session's are not.
    expect(line.includes("HttpOnly")).toBe(!line.startsWith("palisade_csrf="));
  }
  const { palisade_csrf: _csrf, ...jar } = cookiesOf(login);
  expect(Object.keys(jar).sort()).toEqual(["palisade_refresh", "palisade_session"]);

  const me = await send(current, "/api/auth/me", { headers: { cookie: cookieHeader(jar) } });
  expect(me.status).toBe(200);

  // A state-changing request riding on the cookie needs the CSRF token.
  const forged = await send(current, "/api/auth/logout", {
    method: "POST",
    headers: { cookie: cookieHeader(jar) },
  });
  expect(forged.status).toBe(403);
  expect(((await forged.json()) as { code: string }).code).toBe("CSRF_FAILED");

  const csrf = await send(current, "/api/auth/csrf", { headers: { cookie: cookieHeader(jar) } });
  const { token } = (await csrf.json()) as { token: string };
  const withCsrf = { ...jar, ...cookiesOf(csrf) };
  const out = await send(current, "/api/auth/logout", {
    method: "POST",
    headers: { cookie: cookieHeader(withCsrf), "x-csrf-token": token },
  });
  expect(out.status).toBe(204);
  const cleared = out.headers.getSetCookie();
  expect(cleared.every((line) => line.includes("Max-Age=0"))).toBe(true);
  const after = await send(current, "/api/auth/me", { headers: { cookie: cookieHeader(jar) } });
  expect(after.status).toBe(401);
});

/** A new account signed in in browser mode: its address and its cookies. */
async function cookieSession(target: TestApp) {
  const { email } = await signUp(target);
  const login = await send(target, "/api/auth/login?mode=cookie", {
    body: { email, password: STRONG_PASSWORD },
  });
  return { email, jar: cookiesOf(login) };
}

/** `POST /api/auth/refresh` as a browser page sends it: the cookies and a fresh CSRF token. */
async function refreshWithCsrf(target: TestApp, jar: Record<string, string>) {
  const csrf = await send(target, "/api/auth/csrf", { headers: { cookie: cookieHeader(jar) } });
  const { token } = (await csrf.json()) as { token: string };
  return send(target, "/api/auth/refresh", {
    method: "POST",
    headers: { cookie: cookieHeader({ ...jar, ...cookiesOf(csrf) }), "x-csrf-token": token },
  });
}

test("browser mode refreshes from the refresh cookie", async () => {
  current = buildTestApp();
  const { jar } = await cookieSession(current);
  const refreshed = await refreshWithCsrf(current, jar);
  expect(refreshed.status).toBe(200);
  expect(await refreshed.json()).toMatchObject({ tokenType: "Cookie" });
  expect(cookiesOf(refreshed).palisade_refresh).not.toBe(jar.palisade_refresh);
});

test("a cookie-mode sign-in and refresh each answer a CSRF token for the session cookie they set: a page's token works across refreshes (probe 82c F2)", async () => {
  current = buildTestApp();
  const { email } = await signUp(current);
  const login = await send(current, "/api/auth/login?mode=cookie", {
    body: { email, password: STRONG_PASSWORD },
  });
  let jar = cookiesOf(login);
  let { csrfToken } = (await login.json()) as { csrfToken: string };
  expect(jar.palisade_csrf).toBe(csrfToken);
  const refreshWith = (token: string, cookies: Record<string, string>) =>
    send(current!, "/api/auth/refresh", {
      method: "POST",
      headers: { cookie: cookieHeader(cookies), "x-csrf-token": token },
    });
  for (let round = 0; round < 3; round++) {
    const refreshed = await refreshWith(csrfToken, jar);
    expect(refreshed.status).toBe(200);
    const before = { token: csrfToken, jar };
    jar = { ...jar, ...cookiesOf(refreshed) };
    csrfToken = ((await refreshed.json()) as { csrfToken: string }).csrfToken;
    expect(jar.palisade_csrf).toBe(csrfToken);
    // The token held from before is bound to the session cookie this refresh replaced.
    const stale = await send(current, "/api/me/export", {
      headers: {
        cookie: cookieHeader({ ...jar, palisade_csrf: before.token }),
        "x-csrf-token": before.token,
      },
    });
    expect(stale.status).toBe(403);
  }
  const exported = await send(current, "/api/me/export", {
    headers: { cookie: cookieHeader(jar), "x-csrf-token": csrfToken },
  });
  expect(exported.status).toBe(200);
});

test("production cookies are __Host- prefixed and Secure", async () => {
  current = buildTestApp({
    env: PRODUCTION_ENV,
  });
  const { email } = await signUp(current);
  const login = await send(current, "/api/auth/login?mode=cookie", {
    body: { email, password: STRONG_PASSWORD },
  });
  const lines = login.headers.getSetCookie();
  expect(lines.map((l) => l.split("=")[0]).sort()).toEqual([
    "__Host-palisade_csrf",
    "__Host-palisade_refresh",
    "__Host-palisade_session",
  ]);
  expect(lines.every((l) => l.includes("Secure"))).toBe(true);
});

test("beside a header credential the refresh cookie is not read, so the skipped CSRF check rotates nothing (probe 27a F1)", async () => {
  current = buildTestApp();
  const { email, jar } = await cookieSession(current);
  for (const header of <Record<string, string>[]>[
    { authorization: "x" },
    { authorization: "" },
    { "x-api-key": "x" },
    { authorization: "Bearer not-a-token" },
  ]) {
    const refused = await send(current, "/api/auth/refresh", {
      method: "POST",
      // From an allowed origin: another site's page is refused before this (cross-site stage).
      headers: {
        cookie: cookieHeader(jar),
        "sec-fetch-site": "cross-site",
        origin: "http://localhost:3000",
        ...header,
      },
    });
    expect(refused.status).toBe(401);
    const problem = (await refused.json()) as { code: string; detail: string };
    expect(problem.code).toBe("UNAUTHENTICATED");
    expect(problem.detail).toContain("not read beside an Authorization or X-API-Key header");
    expect(refused.headers.getSetCookie()).toEqual([]);
  }
  // The session was neither rotated nor revoked: its cookie still refreshes, with the CSRF token.
  expect((await refreshWithCsrf(current, jar)).status).toBe(200);
  // A refresh token in the body beside a header is still read (a client holding both).
  const tokens = await send(current, "/api/auth/login", {
    body: { email, password: STRONG_PASSWORD },
  });
  const { refreshToken } = (await tokens.json()) as { refreshToken: string };
  const byBody = await send(current, "/api/auth/refresh", {
    method: "POST",
    headers: { authorization: "x" },
    body: { refreshToken },
  });
  expect(byBody.status).toBe(200);
});

test("a cookie whose name is the session cookie's after a 0xA0 byte is not the session cookie: only space and tab around a name are dropped (probe 82c F1)", async () => {
  current = buildTestApp({ env: PRODUCTION_ENV });
  const signIn = async () => {
    const { email } = await signUp(current!);
    const login = await send(current!, "/api/auth/login?mode=cookie", {
      body: { email, password: STRONG_PASSWORD },
    });
    return { email, session: cookiesOf(login)["__Host-palisade_session"]! };
  };
  const attacker = await signIn();
  const victim = await signIn();
  const whoIs = async (cookie: string) => {
    const me = await send(current!, "/api/auth/me", { headers: { cookie } });
    return me.status === 200 ? ((await me.json()) as { email: string }).email : me.status;
  };
  // A sibling subdomain can set the first (a browser holds no name but `__Host-…` to the prefix's
  // rules) with a longer path, so the browser sends it first.
  for (const planted of ["\u00a0__Host-palisade_session", "__Host-palisade_session\u00a0"]) {
    expect(
      await whoIs(`${planted}=${attacker.session}; __Host-palisade_session=${victim.session}`),
    ).toBe(victim.email);
    expect(await whoIs(`${planted}=${attacker.session}`)).toBe(401);
  }
  // Space and tab around a name are a cookie's own spelling (RFC 6265): still the session.
  expect(await whoIs(` \t__Host-palisade_session \t= ${victim.session}\t`)).toBe(victim.email);
});
