/**
 * identify answers a request without any credential at once, with nothing verified or
 * remembered; a request with one is verified once however often it is asked, and never gets
 * the no-credential answer.
 */
import { expect, test } from "bun:test";
import type { CredentialVerifier } from "../../src/plugins/auth/credentials";
import { createIdentify } from "../../src/plugins/auth/identify";

const principal = { kind: "user", id: "u1", role: "user", via: "bearer" } as const;

/** A verifier that counts its verifications; tokens in `cached` are answered from its cache. */
function countingVerifier(cached: readonly string[] = []) {
  const calls: string[] = [];
  const verdict = (token: string) =>
    ["good", "cached", "h.good.s", "h.cached.s"].includes(token)
      ? { ok: true, principal }
      : { ok: false, reason: "invalid" };
  const verifier = {
    accessToken(token: string, via: string) {
      if (cached.includes(token)) {
        calls.push(`cached ${via}:${token}`);
        return verdict(token);
      }
      calls.push(`${via}:${token}`);
      return Promise.resolve(verdict(token));
    },
    verifyApiKey(key: string) {
      calls.push(`key:${key}`);
      return { ok: false, reason: "invalid" };
    },
  } as unknown as CredentialVerifier;
  return { verifier, calls };
}

const request = (headers: Record<string, string>) => new Request("http://localhost/x", { headers });

test("no credential: none, nothing verified, for every request without one", async () => {
  const { verifier, calls } = countingVerifier();
  const identify = createIdentify(verifier, false);
  const headerSets: Record<string, string>[] = [
    {},
    { cookie: "theme=dark; palisade_csrf=x" },
    { accept: "*/*" },
  ];
  for (const headers of headerSets) {
    expect(await identify(request(headers))).toEqual({ status: "none" });
  }
  expect(calls).toEqual([]);
});

test("a credential in any place is verified, once per request, and never answered as none", async () => {
  const { verifier, calls } = countingVerifier();
  const identify = createIdentify(verifier, false);
  const cases: [Record<string, string>, "ok" | "bad", string][] = [
    [{ authorization: "Bearer h.good.s" }, "ok", "bearer:h.good.s"],
    // The scheme is case-insensitive (RFC 9110 §11.1; probe 15b).
    [{ authorization: "bearer h.good.s" }, "ok", "bearer:h.good.s"],
    [{ authorization: "BEARER h.good.s" }, "ok", "bearer:h.good.s"],
    [{ authorization: "Bearer h.bad.s" }, "bad", "bearer:h.bad.s"],
    // One or more spaces after the scheme (RFC 9110's 1*SP; probe 85f F6: two were read as part
    // of the credential). No API_KEYS entry begins with a space: each is trimmed.
    [{ authorization: "Bearer  h.good.s" }, "ok", "bearer:h.good.s"],
    // Not a token's alphabet: looked up as a key, which a bootstrap key may be (probe 39b F1).
    [{ authorization: "Bearer h.good.s x" }, "bad", "key:h.good.s x"],
    [{ authorization: "Bearer scrape!key#0123$abc" }, "bad", "key:scrape!key#0123$abc"],
    [{ authorization: "Bearer " }, "bad", ""],
    [{ authorization: "Bearergood" }, "bad", ""],
    [{ authorization: "Basic abc" }, "bad", ""],
    [{ "x-api-key": "pal_live_x" }, "bad", "key:pal_live_x"],
    // A bearer credential is a token only in a JWT's shape (three parts, two dots); anything else
    // is an API key's: a pal_ key, or a bootstrap key of any spelling (probe 38c F2).
    [{ authorization: "Bearer pal_live_x" }, "bad", "key:pal_live_x"],
    [{ authorization: "Bearer scrape-key-0123456789" }, "bad", "key:scrape-key-0123456789"],
    [{ authorization: "Bearer a.b" }, "bad", "key:a.b"],
    [{ authorization: "Bearer a..b" }, "bad", "key:a..b"],
    [{ authorization: "Bearer .a.b" }, "bad", "key:.a.b"],
    [{ authorization: "Bearer a.b." }, "bad", "key:a.b."],
    [{ authorization: "Bearer a.b.c.d" }, "bad", "key:a.b.c.d"],
    [{ cookie: "theme=dark; palisade_session=good" }, "ok", "cookie:good"],
    [{ authorization: "Bearer h.good.s", "x-api-key": "k" }, "bad", ""],
  ];
  for (const [headers, status, call] of cases) {
    calls.length = 0;
    const one = request(headers);
    expect((await identify(one)).status).toBe(status);
    expect((await identify(one)).status).toBe(status);
    expect(calls).toEqual(call === "" ? [] : [call]);
    // The next request without a credential still gets none, and this one its own answer.
    expect(await identify(request({}))).toEqual({ status: "none" });
  }
});

test("behind TLS only the __Host- session cookie counts", async () => {
  const { verifier, calls } = countingVerifier();
  const identify = createIdentify(verifier, true);
  expect(await identify(request({ cookie: "palisade_session=good" }))).toEqual({ status: "none" });
  expect((await identify(request({ cookie: "__Host-palisade_session=good" }))).status).toBe("ok");
  expect(calls).toEqual(["cookie:good"]);
});

test("known at once: no credential, an API key, a cached token; a token to verify once it is", async () => {
  const { verifier, calls } = countingVerifier(["cached", "h.cached.s"]);
  const identify = createIdentify(verifier, false);
  expect(identify.now(request({}))).toEqual({ status: "none" });
  expect(identify.now(request({ "x-api-key": "pal_live_x" }))?.status).toBe("bad");
  expect(identify.now(request({ authorization: "Bearer h.cached.s" }))?.status).toBe("ok");
  expect(identify.now(request({ cookie: "palisade_session=cached" }))?.status).toBe("ok");
  expect(
    identify.now(request({ authorization: "Bearer h.good.s", "x-api-key": "k" }))?.status,
  ).toBe("bad");
  expect(calls).toEqual(["key:pal_live_x", "cached bearer:h.cached.s", "cached cookie:cached"]);

  // Not cached: not known yet, its verification started by the first ask and made once.
  calls.length = 0;
  const uncached = request({ authorization: "Bearer h.good.s" });
  expect(identify.now(uncached)).toBeUndefined();
  expect(identify.now(uncached)).toBeUndefined();
  const verified = await identify(uncached);
  expect(verified.status).toBe("ok");
  expect(identify.now(uncached)).toBe(verified);
  expect(calls).toEqual(["bearer:h.good.s"]);

  // The promise form answers a request known at once the same, without verifying again.
  calls.length = 0;
  const known = request({ authorization: "Bearer h.cached.s" });
  expect(identify.now(known)?.status).toBe("ok");
  expect(await identify(known)).toBe(identify.now(known)!);
  expect(calls).toEqual(["cached bearer:h.cached.s"]);
});

test("a verifier that throws: identify rejects (never throws at the caller), now throws", async () => {
  const failing = {
    accessToken() {
      throw new Error("database is locked");
    },
    verifyApiKey() {
      throw new Error("database is locked");
    },
  } as unknown as CredentialVerifier;
  const identify = createIdentify(failing, false);
  const withKey = request({ "x-api-key": "pal_live_x" });
  const pending = identify(withKey);
  expect(pending).toBeInstanceOf(Promise);
  await expect(pending).rejects.toThrow("database is locked");
  expect(() => identify.now(request({ authorization: "Bearer t" }))).toThrow("database is locked");
});

test("Authorization: Bearer with more than one space before the credential (RFC 9110's 1*SP) is the credential, on the API and on /metrics (probe 85f F6)", async () => {
  const { buildTestApp, send } = await import("../support/app");
  const { signUp } = await import("../support/auth");
  const metricsToken = "m7T2kW9xQ4vR8nZ1yL6bP5cF0gH3jD2s";
  const target = buildTestApp({ env: { METRICS_TOKEN: metricsToken } });
  try {
    const alice = await signUp(target);
    for (const spaces of [" ", "  ", "   "]) {
      const me = await send(target, "/api/auth/me", {
        headers: { authorization: `Bearer${spaces}${alice.accessToken}` },
      });
      expect(me.status).toBe(200);
      const scrape = await send(target, "/metrics", {
        headers: { authorization: `bearer${spaces}${metricsToken}` },
      });
      expect(scrape.status).toBe(200);
    }
    // No credential after the spaces is none.
    const empty = await send(target, "/api/auth/me", { headers: { authorization: "Bearer   " } });
    expect(empty.status).toBe(401);
  } finally {
    target.close();
  }
});
