import { afterEach, describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import {
  signAccessToken,
  signingKey,
  signingKeys,
  verifyAccessToken,
} from "../../../src/plugins/auth/tokens";
import {
  buildTestApp,
  secondProcess,
  send,
  TEST_JWT_SECRET,
  type TestApp,
} from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const b64 = (value: object | string) =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

function handBuilt(header: object, payload: object, sign: (input: string) => string) {
  const input = `${b64(header)}.${b64(payload)}`;
  return `${input}.${sign(input)}`;
}

const hmac = (secret: string) => (input: string) =>
  createHmac("sha256", secret).update(input).digest("base64url");

async function claimsFor(target: TestApp) {
  const session = await signUp(target);
  const now = Math.floor(Date.now() / 1000);
  return {
    session,
    payload: {
      sub: session.userId,
      role: "user",
      // The session's own family: a token is accepted only for a family the database knows.
      fam: decodeJwt(session.accessToken).fam as string,
      jti: "forged",
      iss: "palisade",
      aud: "palisade-api",
      iat: now,
      exp: now + 600,
    },
  };
}

async function meWith(target: TestApp, token: string) {
  const response = await send(target, "/api/auth/me", { headers: bearer(token) });
  return { status: response.status, body: (await response.json()) as { code?: string } };
}

describe("access tokens are refused when", () => {
  test("alg is none", async () => {
    current = buildTestApp();
    const { payload } = await claimsFor(current);
    const token = `${b64({ alg: "none", typ: "JWT" })}.${b64(payload)}.`;
    expect((await meWith(current, token)).status).toBe(401);
  });

  test("alg is RS256 with the HMAC secret used as the key", async () => {
    current = buildTestApp();
    const { payload } = await claimsFor(current);
    const token = handBuilt({ alg: "RS256", typ: "JWT" }, payload, hmac(TEST_JWT_SECRET));
    expect((await meWith(current, token)).status).toBe(401);
  });

  test("HS384/HS512 are used, even with the right secret", async () => {
    current = buildTestApp();
    const { payload } = await claimsFor(current);
    const token = await new SignJWT(payload)
      .setProtectedHeader({ alg: "HS512" })
      .sign(new TextEncoder().encode(TEST_JWT_SECRET));
    expect((await meWith(current, token)).status).toBe(401);
  });

  test("the payload was changed after signing", async () => {
    current = buildTestApp();
    const { session } = await claimsFor(current);
    const [header, payload, signature] = session.accessToken.split(".");
    const claims = JSON.parse(Buffer.from(payload!, "base64url").toString());
    const promoted = `${header}.${b64({ ...claims, role: "admin" })}.${signature}`;
    expect((await meWith(current, promoted)).status).toBe(401);
  });

  test("it is signed with another secret", async () => {
    current = buildTestApp();
    const { payload } = await claimsFor(current);
    const token = handBuilt(
      { alg: "HS256", typ: "JWT" },
      payload,
      hmac("another-secret-0123456789-abcdefghij"),
    );
    expect((await meWith(current, token)).status).toBe(401);
  });

  test.each([
    ["the audience is wrong", { aud: "someone-else" }],
    ["the issuer is wrong", { iss: "evil" }],
    ["the subject is missing", { sub: undefined }],
    ["the role is unknown", { role: "root" }],
  ])("%s", async (_label, change) => {
    current = buildTestApp();
    const { payload } = await claimsFor(current);
    const token = handBuilt(
      { alg: "HS256", typ: "JWT" },
      { ...payload, ...change },
      hmac(TEST_JWT_SECRET),
    );
    expect((await meWith(current, token)).status).toBe(401);
  });

  test("it has expired (beyond 30 s of clock skew), with its own failure reason", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const session = await signUp(current);
    clock.advance(60 * 60 * 1000 + 20_000);
    expect((await meWith(current, session.accessToken)).status).toBe(200);
    clock.advance(20_000);
    const expired = await meWith(current, session.accessToken);
    expect(expired.status).toBe(401);
    const metrics = await (await send(current, "/metrics")).text();
    expect(metrics).toContain('auth_failures_total{reason="expired_token"} 1');
  });

  test("no credential at all: 401 with WWW-Authenticate", async () => {
    current = buildTestApp();
    const response = await send(current, "/api/auth/me");
    expect(response.status).toBe(401);
    expect(response.headers.get("www-authenticate")).toBe('Bearer realm="palisade"');
  });

  test("it is another spelling of a valid token: padding, or the signature's unused bits set (probe 32a F3)", async () => {
    current = buildTestApp();
    const session = await signUp(current);
    const token = session.accessToken;
    expect((await meWith(current, token)).status).toBe(200);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const last = alphabet.indexOf(token.at(-1)!);
    const [header, payload] = token.split(".");
    const spellings = [
      `${token}=`,
      `${token}==`,
      `${token.slice(0, -1)}${alphabet[last ^ 1]}`,
      `${token.slice(0, -1)}${alphabet[last ^ 2]}`,
      `${header}=.${token.slice(header!.length + 1)}`,
      `${header}.${payload}=.${token.split(".")[2]}`,
    ];
    for (const spelling of spellings) {
      expect({ spelling, ...(await meWith(current, spelling)) }).toMatchObject({
        spelling,
        status: 401,
      });
    }
    // The token itself still works.
    expect((await meWith(current, token)).status).toBe(200);
  });

  test("a hand-built token with every claim right and the right secret is accepted", async () => {
    // The control for the cases above: they fail for their one change, not for the harness.
    current = buildTestApp();
    const { payload } = await claimsFor(current);
    const token = handBuilt({ alg: "HS256", typ: "JWT" }, payload, hmac(TEST_JWT_SECRET));
    expect((await meWith(current, token)).status).toBe(200);
  });
});

describe("revocation across processes", () => {
  test("a logout in one process reaches another process's cache within a second", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const session = await signUp(current);
    const other = secondProcess(current, clock, "10.1.1.1");
    const meOnOther = async () =>
      (
        await other.app.handle(
          new Request("http://localhost/api/auth/me", { headers: bearer(session.accessToken) }),
        )
      ).status;
    expect(await meOnOther()).toBe(200); // now cached there

    await send(current, "/api/auth/logout", {
      method: "POST",
      headers: bearer(session.accessToken),
    });
    expect((await meWith(current, session.accessToken)).status).toBe(401); // here: at once
    clock.advance(1_000);
    expect(await meOnOther()).toBe(401); // there: within a second
    other.close();
  });
});

describe("signing-key rotation", () => {
  const OLD = "old-jwt-secret-0123456789-abcdefghijklmnopq";
  const NEW = "new-jwt-secret-9876543210-zyxwvutsrqponmlkj";

  test("tokens name their key in a kid header that does not reveal it", async () => {
    current = buildTestApp();
    const { session } = await claimsFor(current);
    const header = decodeProtectedHeader(session.accessToken);
    expect(header.kid).toBe(signingKey(TEST_JWT_SECRET).kid);
    expect(TEST_JWT_SECRET).not.toContain(header.kid!);
  });

  test("while JWT_PREVIOUS_SECRET_KEY is set, tokens signed with it still work; after, they do not", async () => {
    current = buildTestApp({ env: { JWT_SECRET_KEY: NEW, JWT_PREVIOUS_SECRET_KEY: OLD } });
    const { session } = await claimsFor(current);
    const byOldKey = await signAccessToken(
      signingKey(OLD),
      { sub: session.userId, role: "user", fam: decodeJwt(session.accessToken).fam as string },
      Date.now(),
      600,
    );
    expect((await meWith(current, byOldKey)).status).toBe(200);
    expect((await meWith(current, session.accessToken)).status).toBe(200);

    const keys = signingKeys(NEW, null);
    expect((await verifyAccessToken(keys, byOldKey, Date.now(), 600)).ok).toBe(false);
    const stranger = await signAccessToken(
      signingKey("stranger-secret-0123456789-abcdefghijkl"),
      { sub: session.userId, role: "user", fam: "x" },
      Date.now(),
      600,
    );
    expect((await meWith(current, stranger)).status).toBe(401);
  });

  test("a token without kid (issued before kids existed) is checked against the current key", async () => {
    current = buildTestApp();
    const { payload } = await claimsFor(current);
    const token = handBuilt({ alg: "HS256", typ: "JWT" }, payload, hmac(TEST_JWT_SECRET));
    expect((await meWith(current, token)).status).toBe(200);
  });
});

test("a token signed with the real key but claiming a role its account does not have is refused (probe 27b F1)", async () => {
  current = buildTestApp();
  const { session, payload } = await claimsFor(current);
  const asAdmin = handBuilt(
    { alg: "HS256", typ: "JWT", kid: signingKey(TEST_JWT_SECRET).kid },
    { ...payload, role: "admin" },
    hmac(TEST_JWT_SECRET),
  );
  expect((await meWith(current, asAdmin)).status).toBe(401);
  for (const path of ["/api/admin/blocks", "/api/admin/api-keys", "/api/admin/audit"]) {
    const response = await send(current, path, { headers: bearer(asAdmin) });
    expect(response.status).toBe(401);
  }
  // Reported once, as a credential forged with the signing key (probe 27d F3): never the token.
  current.services.audit.flush();
  const reports = current.db.$client
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered'",
    )
    .all();
  expect(reports.map((row) => JSON.parse(row.detail))).toEqual([
    { table: "users", id: session.userId, claimedRole: "admin" },
  ]);
  expect(reports[0]!.detail).not.toContain(asAdmin.split(".")[2]!);
  // The account's own token, and one re-signed with the role it has, still work.
  expect((await meWith(current, session.accessToken)).status).toBe(200);
  const asUser = handBuilt(
    { alg: "HS256", typ: "JWT", kid: signingKey(TEST_JWT_SECRET).kid },
    payload,
    hmac(TEST_JWT_SECRET),
  );
  expect((await meWith(current, asUser)).status).toBe(200);
});
