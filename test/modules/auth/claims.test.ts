/**
 * Validly signed access tokens whose claims are of the wrong type, out of range, or claim a
 * lifetime the configuration does not grant: each is 401 UNAUTHENTICATED on every route that reads
 * the claims, never a 500, never accepted.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { decodeJwt } from "jose";
import { buildTestApp, send, TEST_JWT_SECRET, type TestApp } from "../../support/app";
import { bearer, type Session, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import { anotherInstance } from "../../support/instance";

const ENV = { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" };
const TTL_SECONDS = 60 * 60;

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** A token signed with the real key, header and payload exactly as given. */
function signed(header: Record<string, unknown>, payload: unknown): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const signature = createHmac("sha256", TEST_JWT_SECRET).update(input).digest("base64url");
  return `${input}.${signature}`;
}

const HEADER = { alg: "HS256", typ: "JWT" };

let app: TestApp;
let session: Session;
let valid: Record<string, unknown>;

beforeAll(async () => {
  app = buildTestApp({ env: ENV });
  session = await signUp(app);
  const now = Math.floor(Date.now() / 1000);
  valid = {
    sub: session.userId,
    role: "user",
    fam: decodeJwt(session.accessToken).fam,
    jti: "hand-built",
    iss: "palisade",
    aud: "palisade-api",
    iat: now,
    exp: now + 600,
  };
});
afterAll(() => app.close());

/** Every route that reads the claims: who the token is, and logout (which reads `fam`). */
async function statusesFor(token: string) {
  const results: { route: string; status: number; code?: string }[] = [];
  for (const [method, path] of [
    ["GET", "/api/auth/me"],
    ["POST", "/api/auth/logout"],
  ] as const) {
    const response = await send(app, path, { method, headers: bearer(token) });
    const text = await response.text();
    const code = text ? (JSON.parse(text) as { code?: string }).code : undefined;
    results.push({ route: `${method} ${path}`, status: response.status, code });
  }
  return results;
}

const refused = (route: string) => ({ route, status: 401, code: "UNAUTHENTICATED" });

const MALFORMED: [string, (now: number) => { header?: object; payload: unknown }][] = [
  ...(
    [
      ["sub", [{ id: "x" }, ["a"], 42, null, true, "", "u".repeat(200)]],
      ["role", [{ admin: true }, ["admin"], 1, null, "root", ""]],
      ["fam", [{ id: "x" }, ["f"], 7, null, false, ""]],
      ["jti", [{}, ["j"], 3, null, ""]],
      ["iat", ["1700000000", {}, [1], null, 1.5, -1, true]],
      ["exp", ["9999999999", {}, [9999999999], null, 1e300, true]],
      ["nbf", ["0", {}, [0]]],
      ["iss", [["palisade"], { iss: "palisade" }, 1, null]],
      ["aud", [{ aud: "palisade-api" }, 1, null, [1]]],
    ] as const
  ).flatMap(([claim, values]) =>
    values.map(
      (value) =>
        [
          `${claim} = ${JSON.stringify(value)?.slice(0, 24)}`,
          () => ({ payload: { ...valid, [claim]: value } }),
        ] as [string, () => { payload: unknown }],
    ),
  ),
  ...(["sub", "role", "fam", "jti", "iat", "exp"] as const).map(
    (claim) =>
      [
        `${claim} missing`,
        () => {
          const { [claim]: _gone, ...rest } = valid;
          return { payload: rest };
        },
      ] as [string, () => { payload: unknown }],
  ),
  ["the payload an array", () => ({ payload: [valid] })],
  ["the payload a string", () => ({ payload: "claims" })],
  ["the payload null", () => ({ payload: null })],
  ["kid a number", () => ({ header: { ...HEADER, kid: 5 }, payload: valid })],
  ["kid an object", () => ({ header: { ...HEADER, kid: { id: 1 } }, payload: valid })],
  [
    "crit naming an unknown extension",
    () => ({ header: { ...HEADER, crit: ["x"], x: 1 }, payload: valid }),
  ],
  ["a family that does not exist", () => ({ payload: { ...valid, fam: "no-such-family" } })],
  ["another user's subject in this family", () => ({ payload: { ...valid, sub: "someone-else" } })],
  [
    "a lifetime longer than ACCESS_TOKEN_EXPIRE_MINUTES (plus 30 s of skew)",
    (now) => ({ payload: { ...valid, iat: now, exp: now + TTL_SECONDS + 31 } }),
  ],
  [
    "iat in the future beyond the skew",
    (now) => ({ payload: { ...valid, iat: now + 31, exp: now + 600 } }),
  ],
];

describe("a validly signed access token is refused with 401 when", () => {
  test.each(MALFORMED)("%s", async (_label, build) => {
    const { header, payload } = build(Math.floor(Date.now() / 1000));
    const token = signed({ ...HEADER, ...header }, payload);
    expect(await statusesFor(token)).toEqual([
      refused("GET /api/auth/me"),
      refused("POST /api/auth/logout"),
    ]);
    // The refused logout did not end the real session the token pointed at.
    const alive = await send(app, "/api/auth/me", { headers: bearer(session.accessToken) });
    expect(alive.status).toBe(200);
  });

  test("the control: the same hand-built token with every claim right is accepted", async () => {
    const now = Math.floor(Date.now() / 1000);
    const atTheLimit = { ...valid, iat: now + 29, exp: now + 29 + TTL_SECONDS + 29 };
    const response = await send(app, "/api/auth/me", {
      headers: bearer(signed(HEADER, atTheLimit)),
    });
    expect(response.status).toBe(200);
    const asArray = { ...valid, aud: ["palisade-api", "other"] };
    expect(
      (await send(app, "/api/auth/me", { headers: bearer(signed(HEADER, asArray)) })).status,
    ).toBe(200);
  });
});

describe("lowering ACCESS_TOKEN_EXPIRE_MINUTES", () => {
  let current: TestApp | null = null;
  const closers: (() => void)[] = [];
  afterEach(() => {
    for (const close of closers.splice(0)) close();
    current?.close();
    current = null;
  });

  test("a logged-out 30-minute token stays refused after a restart with a 1-minute lifetime", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock, env: { ...ENV, ACCESS_TOKEN_EXPIRE_MINUTES: "30" } });
    const user = await signUp(current);
    const logout = await send(current, "/api/auth/logout", {
      method: "POST",
      headers: bearer(user.accessToken),
    });
    expect(logout.status).toBe(204);
    clock.advance(3 * 60_000);

    const restarted = anotherInstance(current, {
      clock,
      env: { ...ENV, ACCESS_TOKEN_EXPIRE_MINUTES: "1" },
    });
    closers.push(() => restarted.close());
    const me = await restarted.app.handle(
      new Request("http://localhost/api/auth/me", { headers: bearer(user.accessToken) }),
    );
    expect(me.status).toBe(401);
  });

  test("a 30-minute token is refused by an instance configured for 1 minute; its own tokens work", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock, env: { ...ENV, ACCESS_TOKEN_EXPIRE_MINUTES: "30" } });
    const user = await signUp(current);
    const restarted = anotherInstance(current, {
      clock,
      env: { ...ENV, ACCESS_TOKEN_EXPIRE_MINUTES: "1" },
    });
    closers.push(() => restarted.close());
    const meWith = async (token: string) =>
      (
        await restarted.app.handle(
          new Request("http://localhost/api/auth/me", { headers: bearer(token) }),
        )
      ).status;
    expect(await meWith(user.accessToken)).toBe(401);

    const refreshed = await restarted.app.handle(
      new Request("http://localhost/api/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refreshToken: user.refreshToken }),
      }),
    );
    expect(refreshed.status).toBe(200);
    const { accessToken, expiresIn } = (await refreshed.json()) as {
      accessToken: string;
      expiresIn: number;
    };
    expect(expiresIn).toBe(60);
    expect(await meWith(accessToken)).toBe(200);
  });
});
