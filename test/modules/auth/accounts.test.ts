import { afterEach, describe, expect, test } from "bun:test";
import { decodeJwt, decodeProtectedHeader } from "jose";
import { loadPasswordStrength } from "../../../src/modules/auth/passwords";
import { REPEAT_GRACE_MS } from "../../../src/modules/auth/service";
import { createCredentialSeal } from "../../../src/plugins/auth/seal";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "../../support/app";
import { bearer, logIn, STRONG_PASSWORD, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import { anotherInstance } from "../../support/instance";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

async function problem(response: Response) {
  return (await response.json()) as {
    code: string;
    detail: string;
    errors?: { field: string; message: string }[];
  };
}

/** `count` wrong passwords for `email`, each from an address of its own. */
async function failedSignInsFromElsewhere(target: TestApp, email: string, count: number) {
  for (let i = 0; i < count; i++) {
    await send(target, "/api/auth/login", {
      body: { email, password: "nope-nope-nope" },
      peer: `203.0.113.${i + 10}`,
    });
  }
}

/** The sign-ins counted against `peer`'s address, once the permits given back are (next turn). */
async function addressSignInsCounted(target: TestApp, peer: string): Promise<number> {
  await Bun.sleep(50);
  const row = target.db.$client
    .query("SELECT current FROM rate_limit_counters WHERE policy = 'login' AND key = ?")
    .get(`ip:${peer}`) as { current: number } | null;
  return row?.current ?? 0;
}

describe("register", () => {
  test("creates the account with a normalised email and an argon2id hash", async () => {
    current = buildTestApp();
    const response = await send(current, "/api/auth/register", {
      body: { email: "  Ada.Lovelace@Example.TEST ", password: STRONG_PASSWORD },
    });
    expect(response.status).toBe(201);
    expect(await response.json()).toEqual({ email: "Ada.Lovelace@example.test", role: "user" });
    const row = current.db.$client
      .query("SELECT email, password_hash AS hash, role FROM users")
      .get() as { email: string; hash: string; role: string };
    expect(row.email).toBe("Ada.Lovelace@example.test");
    expect(row.hash).toStartWith("$argon2id$");
    expect(row.role).toBe("user");
    current.services.audit.flush();
    const types = current.db.$client.query("SELECT type FROM audit_events").values().flat();
    expect(types).toContain("auth.register.succeeded");
  });

  test("a zxcvbn load that fails fails the registrations waiting on it, and the next registration loads it again", async () => {
    let loads = 0;
    current = buildTestApp({
      loadPasswordStrength: async () => {
        loads += 1;
        if (loads === 1) throw new Error("Cannot find module '@zxcvbn-ts/language-en'");
        return loadPasswordStrength();
      },
    });
    let peers = 0;
    // Each from its own address: registration's per-address limit is not what this test is about.
    const register = (email: string) =>
      send(current!, "/api/auth/register", {
        body: { email, password: STRONG_PASSWORD },
        peer: `10.20.0.${++peers}`,
      });
    const first = await Promise.all([register("a@example.test"), register("b@example.test")]);
    for (const response of first) {
      expect(response.status).toBe(500);
      expect(response.headers.get("content-type")).toStartWith("application/problem+json");
      expect(JSON.stringify(await response.json())).not.toContain("zxcvbn");
    }
    expect(loads).toBe(1);
    // Neither was half made.
    expect(current.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 0 });

    const again = await register("a@example.test");
    expect(again.status).toBe(201);
    expect((await register("c@example.test")).status).toBe(201);
    expect(loads).toBe(2);
  });

  test("an invalid email is 422 naming the field", async () => {
    current = buildTestApp();
    const response = await send(current, "/api/auth/register", {
      body: { email: "not-an-email", password: STRONG_PASSWORD },
    });
    expect(response.status).toBe(422);
    expect((await problem(response)).errors?.[0]?.field).toBe("body/email");
  });

  test.each([
    ["too short", "Ab1!x", "min_length"],
    ["a common password", "password123", "too_weak"],
    ["the email's local part", "grace-hopper-Navy-1906!", "contains_email"],
    ["over the maximum", `${"Zq9!".repeat(70)}`, "max_length"],
  ])(
    "a weak password (%s) names the rule and never echoes the password",
    async (_l, password, rule) => {
      current = buildTestApp();
      const response = await send(current, "/api/auth/register", {
        body: { email: "grace-hopper@example.test", password },
      });
      expect(response.status).toBe(422);
      const body = await problem(response);
      expect(body.code).toBe("VALIDATION_FAILED");
      expect(body.errors?.[0]?.field).toBe("body/password");
      expect(body.errors?.[0]?.message).toStartWith(rule);
      expect(JSON.stringify(body)).not.toContain(password);
      expect(current.logs.text).not.toContain(password);
    },
  );

  test("a long password of l33t spellings is judged without holding the service: each answered, /health answered beside them (probe 76a F1)", async () => {
    current = buildTestApp();
    const target = current;
    // 256 characters each: zxcvbn's own bounds took 0.4 to 4 s apiece on them, twice a request.
    const passwords = [
      "@dm1n1990".repeat(30).slice(0, 256),
      "p4ssw0rdl0v3l3tm31n".repeat(14).slice(0, 256),
      "a1@3$5!0".repeat(32),
      "4dm1n".repeat(52).slice(0, 256),
    ];
    const statuses = await Promise.all(
      passwords.map(async (password, i) => {
        const response = await send(target, "/api/auth/register", {
          body: { email: `l33t-${i}@example.test`, password },
          peer: `198.51.100.${60 + i}`,
        });
        return response.status;
      }),
    );
    expect(statuses.every((status) => status === 201 || status === 422)).toBe(true);
    expect((await send(target, "/health")).status).toBe(200);
  });

  test("a password longer than 64 characters is judged by its first 64: a weak start is refused whatever follows", async () => {
    current = buildTestApp();
    const weakStart = await send(current, "/api/auth/register", {
      body: {
        email: "long-weak@example.test",
        password: `${"password".repeat(8)}${"Zq9!xK2#vB7$mN4&".repeat(4)}`,
      },
    });
    expect(weakStart.status).toBe(422);
    expect((await problem(weakStart)).errors?.[0]?.message).toStartWith("too_weak");
    const strongStart = await send(current, "/api/auth/register", {
      body: {
        email: "long-strong@example.test",
        password: `${"Zq9!xK2#vB7$mN4&wR6^".repeat(4)}${"password".repeat(10)}`,
      },
    });
    expect(strongStart.status).toBe(201);
  });

  test("zxcvbn's suggestion is in the message", async () => {
    current = buildTestApp();
    const response = await send(current, "/api/auth/register", {
      body: { email: "someone@example.test", password: "password123" },
    });
    expect((await problem(response)).detail).toContain("commonly used password");
  });

  test("a strong piece said again is still strong: judged by the piece, not refused for repeating (probe 78b F1)", async () => {
    current = buildTestApp({ env: PRODUCTION_ENV });
    const response = await send(current, "/api/auth/register", {
      body: { email: "twice@example.test", password: "Zq9!xK2#vB7$mN4&Zq9!xK2#vB7$mN4&" },
    });
    expect(response.status).toBe(201);
  });

  test("the production policy needs 12 characters and strength 3", async () => {
    current = buildTestApp({ env: PRODUCTION_ENV });
    const weak = await send(current, "/api/auth/register", {
      body: { email: "p@example.test", password: "qwerty123456" },
    });
    expect(weak.status).toBe(422);
    const ok = await send(current, "/api/auth/register", {
      body: { email: "p@example.test", password: STRONG_PASSWORD },
    });
    expect(ok.status).toBe(201);
  });

  test.each([
    "jenn!fer1234",
    "qw3r7y|_|!0p",
    "f007b@111234",
    "!10v3y0|_|12",
    "tru5tn011234",
    "p@55w0rd!2345678",
    // Said again past 20 characters: judged by the piece (probe 78b F1).
    "jenn!fer1234jenn!fer1234",
    "w!11!@m1234w!11!@m1234",
    "!|0vey0|_|1234!|0vey0|_|1234",
    "jenn!fer1234jenn!fer12",
    "Jenn!fer1234jenn!fer1234",
    "p@$$w0rd1234P@$$W0RD1234",
  ])(
    "a l33t spelling of a common password, %s, is refused in production: a password of up to 20 characters, or one repeating such a piece, is tried with zxcvbn's 100 spellings (probe 77b F1)",
    async (password) => {
      current = buildTestApp({ env: PRODUCTION_ENV });
      const response = await send(current, "/api/auth/register", {
        body: { email: "leet@example.test", password },
      });
      expect(response.status).toBe(422);
      expect((await problem(response)).errors?.[0]?.message).toStartWith("too_weak");
    },
  );

  test("the policy reads a password's NFKC spelling and counts characters: a fullwidth or mathematical spelling of a weak password is as weak, an emoji is one character (probe 38a F2)", async () => {
    current = buildTestApp({ env: PRODUCTION_ENV });
    const target = current;
    let n = 0;
    const rule = async (password: string, email = `p${++n}@example.test`) => {
      const response = await send(target, "/api/auth/register", {
        body: { email, password },
        peer: `198.51.100.${n}`,
      });
      if (response.status === 201) return "accepted";
      expect(response.status).toBe(422);
      const { errors } = (await response.json()) as { errors: { message: string }[] };
      return errors[0]!.message;
    };
    for (const password of [
      "ｐａｓｓｗｏｒｄ１２３４",
      "Ｐａｓｓｗｏｒｄ１２３４！",
      "ｑｗｅｒｔｙｕｉｏｐ１２",
      "𝐩𝐚𝐬𝐬𝐰𝐨𝐫𝐝𝟏𝟐𝟑𝟒",
    ]) {
      expect({ password, verdict: await rule(password) }).toEqual({
        password,
        verdict: expect.stringContaining("too easy to guess"),
      });
    }
    // Six characters, twelve UTF-16 units: short.
    expect(await rule("𝔵𝔶𝔷𝔴𝔳𝔲")).toContain("at least 12 characters");
    // What NFKC leaves: an invisible character, a homoglyph, small capitals (probe 39b F2).
    for (const password of [
      "password\u200b1234",
      "pass\u00adword1234",
      "p\ufe0fa\ufe0fs\ufe0fs\ufe0fword1234",
      "p\u0430ssword1234",
      "ᴘᴀꜱꜱᴡᴏʀᴅ1234",
      "qwertyuiop\u200b12",
      // What that skeleton missed (probe 40b F1): a blank letter, other scripts, one accent.
      "pass\u2800word1234",
      "passw\u0585rd1234",
      "ꓑꓮꓢꓢꓪꓳꓣꓓ1234",
      "pássword1234",
      // Letters Unicode's confusables list names whole were read as their odd prototypes there
      // (`ö` as Arabic `ة`), and the accents kept (probe 91h F4).
      "passwörd1234!",
      "mönkeymönkey12",
      "fööţball2024!",
      "\u0162est\u0163est2024",
      // Cherokee small letters Unicode draws as small capitals, read once (probe 91i F1).
      "ꮲꭺssword1234",
      "ꮐoogle123456",
      "ꭻennifer1234",
      // One expanding character repeated: one character, as typed.
      "\ufdfa".repeat(12),
      "\ufdfb".repeat(12),
    ]) {
      expect({ password, verdict: await rule(password) }).toEqual({
        password,
        verdict: expect.stringContaining("too easy to guess"),
      });
    }
    // One typed character NFKC makes eighteen, three it makes a dozen: short as typed.
    expect(await rule("\ufdfa")).toContain("at least 12 characters");
    expect(await rule("㌀㌁㌂")).toContain("at least 12 characters");
    // Twelve tag characters draw nothing.
    expect(await rule("\u{e0041}".repeat(12))).toContain("no character that shows");
    // The email's local part in another spelling is still the email.
    expect(await rule("xx-E\u0301mile.Zola-harbor-quartz-38", "émile.zola@example.test")).toContain(
      "email address",
    );
    expect(
      await rule("xx-ｅｍｉｌｅ.ｚｏｌａ-harbor-quartz-38", "emile.zola@example.test"),
    ).toContain("email address");
  });

  test("a password is one password in any Unicode spelling: registered composed, it logs in decomposed or fullwidth (probe 38a F2)", async () => {
    current = buildTestApp();
    const password = "Crème-Brûlée-Harbor-Quartz-38";
    const registered = await send(current, "/api/auth/register", {
      body: { email: "pastry@example.test", password },
    });
    expect(registered.status).toBe(201);
    for (const spelling of [
      password,
      password.normalize("NFD"),
      "Crème-Brûlée-Ｈａｒｂｏｒ-Quartz-38",
    ]) {
      const login = await send(current, "/api/auth/login", {
        body: { email: "pastry@example.test", password: spelling },
      });
      expect({ spelling, status: login.status }).toEqual({ spelling, status: 200 });
    }
    const wrong = await send(current, "/api/auth/login", {
      body: { email: "pastry@example.test", password: "Creme-Brulee-Harbor-Quartz-38" },
    });
    expect(wrong.status).toBe(401);
  });

  test("an account hashed before passwords were normalised logs in with the spelling it chose, and its hash is made again in the normalised one (probe 38a F2)", async () => {
    current = buildTestApp();
    const typed = "Ｈａｒｂｏｒ-Quartz-Crème-38-violet";
    const email = "legacy@example.test";
    expect(
      (await send(current, "/api/auth/register", { body: { email, password: typed } })).status,
    ).toBe(201);
    const user = { email, userId: current.services.auth.findUserByEmail(email)!.id };
    // The hash as the release before made it: of the spelling typed.
    const legacy = await Bun.password.hash(typed, {
      algorithm: "argon2id",
      memoryCost: 1024,
      timeCost: 1,
    });
    const seal = createCredentialSeal(current.config.audit.secretKey);
    const db = current.db.$client;
    const row = db
      .query("SELECT id, email, email_key AS emailKey, role FROM users WHERE id = ?")
      .get(user.userId) as { id: string; email: string; emailKey: string; role: "user" };
    db.query("UPDATE users SET password_hash = ?, seal = ? WHERE id = ?").run(
      legacy,
      seal.account({ ...row, passwordHash: legacy }),
      user.userId,
    );
    const login = await send(current, "/api/auth/login", {
      body: { email: user.email, password: typed },
    });
    expect(login.status).toBe(200);
    const after = db
      .query("SELECT password_hash AS hash FROM users WHERE id = ?")
      .get(user.userId) as {
      hash: string;
    };
    expect(after.hash).not.toBe(legacy);
    expect(await Bun.password.verify(typed.normalize("NFKC"), after.hash)).toBe(true);
    // Resealed: the account still works, in the other spelling too.
    const again = await send(current, "/api/auth/login", {
      body: { email: user.email, password: typed.normalize("NFKC") },
    });
    expect(again.status).toBe(200);
  });

  test("a duplicate email (any case) is 409 in development", async () => {
    current = buildTestApp();
    await send(current, "/api/auth/register", {
      body: { email: "dup@example.test", password: STRONG_PASSWORD },
    });
    const again = await send(current, "/api/auth/register", {
      body: { email: "DUP@example.test", password: STRONG_PASSWORD },
    });
    expect(again.status).toBe(409);
    expect((await problem(again)).code).toBe("CONFLICT");
  });

  test("with enumeration resistance a duplicate is answered exactly like a new account", async () => {
    current = buildTestApp({ env: PRODUCTION_ENV });
    const first = await send(current, "/api/auth/register", {
      body: { email: "twice@example.test", password: STRONG_PASSWORD },
      peer: "192.0.2.1",
    });
    const second = await send(current, "/api/auth/register", {
      body: { email: "twice@example.test", password: STRONG_PASSWORD },
      peer: "192.0.2.2",
    });
    expect(second.status).toBe(first.status);
    expect(await second.json()).toEqual(await first.json());
    const count = current.db.$client.query("SELECT count(*) AS n FROM users").get() as {
      n: number;
    };
    expect(count.n).toBe(1);
  });
});

describe("login", () => {
  test("returns a bearer pair; the access token carries the checked claims", async () => {
    current = buildTestApp();
    const session = await signUp(current);
    const header = decodeProtectedHeader(session.accessToken);
    const claims = decodeJwt(session.accessToken);
    expect(header.alg).toBe("HS256");
    expect(claims).toMatchObject({
      sub: session.userId,
      role: "user",
      iss: "palisade",
      aud: "palisade-api",
    });
    expect(claims.exp! - claims.iat!).toBe(60 * 60);
    expect(claims.jti).toBeString();
    expect(claims.fam).toBeString();
    const me = await send(current, "/api/auth/me", { headers: bearer(session.accessToken) });
    expect(me.status).toBe(200);
    expect(await me.json()).toEqual({
      kind: "user",
      id: session.userId,
      email: session.email,
      role: "user",
    });
  });

  test("a wrong password and an unknown account get the same answer", async () => {
    current = buildTestApp();
    const session = await signUp(current);
    const wrong = await send(current, "/api/auth/login", {
      body: { email: session.email, password: "wrong-password-123" },
    });
    const unknown = await send(current, "/api/auth/login", {
      body: { email: "nobody@example.test", password: "wrong-password-123" },
    });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    const [a, b] = [await problem(wrong), await problem(unknown)];
    expect(a.code).toBe("UNAUTHENTICATED");
    expect(a.detail).toBe(b.detail);
    current.services.audit.flush();
    const failed = current.db.$client
      .query("SELECT actor, detail FROM audit_events WHERE type = 'auth.login.failed' ORDER BY id")
      .all() as { actor: string | null; detail: string }[];
    expect(failed).toEqual([
      { actor: `user:${session.userId}`, detail: '{"reason":"bad_password"}' },
      { actor: null, detail: '{"reason":"unknown_account"}' },
    ]);
    const metrics = await (await send(current, "/metrics")).text();
    expect(metrics).toContain('auth_failures_total{reason="bad_password"} 2');
  });

  test("5 attempts per minute per account, from any address", async () => {
    current = buildTestApp();
    // Signing up logs in once: that is the first of the five.
    const session = await signUp(current);
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const response = await send(current, "/api/auth/login", {
        body: { email: session.email, password: "nope-nope-nope" },
        peer: `198.51.100.${i + 1}`,
      });
      statuses.push(response.status);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 429, 429]);
  });

  test("10 failures in 15 minutes lock the account, even for the right password", async () => {
    // Aligned to the lockout's 15-minute windows, so all ten failures share one.
    const clock = new ManualClock(1_000, 15 * 60_000);
    current = buildTestApp({ clock });
    const session = await signUp(current);
    // Two minutes apart, so the 5-per-minute limit's sliding window has forgotten each batch.
    clock.advance(120_000);
    for (let i = 0; i < 10; i++) {
      if (i === 5) clock.advance(120_000);
      const response = await send(current, "/api/auth/login", {
        body: { email: session.email, password: "nope-nope-nope" },
        peer: `198.51.100.${i + 1}`,
      });
      expect(response.status).toBe(401);
    }
    clock.advance(120_000);
    const locked = await send(current, "/api/auth/login", {
      body: { email: session.email, password: STRONG_PASSWORD },
      peer: "198.51.100.99",
    });
    expect(locked.status).toBe(429);
    expect((await problem(locked)).detail).toContain("Too many failed sign-ins");
    // An unknown account locks the same way: the lock tells nothing about who has an account.
    clock.advance(16 * 60_000);
    const unlocked = await send(current, "/api/auth/login", {
      body: { email: session.email, password: STRONG_PASSWORD },
      peer: "198.51.100.99",
    });
    expect(unlocked.status).toBe(200);
  });

  test("a flood of sign-ins to an account one failure short of its lock, its own limit spent, is never told it is locked, its owner neither (probe 81c F1)", async () => {
    const clock = new ManualClock(1_000, 15 * 60_000);
    current = buildTestApp({ clock, env: { IP_BLOCK_FAILED_LOGINS: "1000" } });
    const session = await signUp(current);
    clock.advance(120_000);
    const signIn = (password: string, peer: string) =>
      send(current!, "/api/auth/login", { body: { email: session.email, password }, peer });
    // Four failures, then five more two minutes on: nine of the lock's ten, and the account's five
    // a minute spent.
    for (let i = 0; i < 4; i++)
      expect((await signIn("nope-nope-nope", `198.51.100.${i + 1}`)).status).toBe(401);
    clock.advance(120_000);
    for (let i = 0; i < 5; i++)
      expect((await signIn("nope-nope-nope", `198.51.100.${i + 10}`)).status).toBe(401);
    const flood = await Promise.all([
      ...Array.from({ length: 30 }, (_, i) => signIn("nope-nope-nope", `203.0.113.${i + 1}`)),
      signIn(STRONG_PASSWORD, "198.51.100.200"),
    ]);
    const details = await Promise.all(
      flood.map(async (response) => [response.status, (await problem(response)).detail]),
    );
    // Every one refused by the account's limit, none with a lock that is not there.
    for (const [status, detail] of details) {
      expect(status).toBe(429);
      expect(detail).not.toContain("failed sign-ins");
    }
    current.services.audit.flush();
    const locked = current.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'auth.login.locked'")
      .get() as { n: number };
    expect(locked.n).toBe(0);
    // Once the account's limit has room again (its sliding minute passed), its owner signs in.
    clock.advance(120_000);
    expect((await signIn(STRONG_PASSWORD, "198.51.100.200")).status).toBe(200);
  });

  /** The lockout alone: the per-address limits raised, its 15-minute windows aligned. */
  const lockoutOnlyApp = () => {
    current = buildTestApp({
      clock: new ManualClock(1_000, 15 * 60_000),
      env: { RATE_LIMIT_LOGIN: "1000", RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
    });
    return current;
  };

  test("wrong passwords sent all at once get no more verdicts than the lockout allows, whatever the spelling", async () => {
    const target = lockoutOnlyApp();
    const session = await signUp(target);
    const [local, domain] = session.email.split("@") as [string, string];
    const spellings = [session.email, `${local.toUpperCase()}@${domain}`, ` ${session.email} `];
    const statuses = await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        const response = await send(target, "/api/auth/login", {
          body: { email: spellings[i % spellings.length], password: "nope-nope-nope" },
          peer: `198.51.${i}.7`,
        });
        return response.status;
      }),
    );
    expect(statuses.filter((status) => status === 401)).toHaveLength(10);
    expect(statuses.filter((status) => status === 429)).toHaveLength(20);
    // Each 429 of the lockout counts with the limiter's refusals, as well as an auth failure.
    const metrics = await (await send(target, "/metrics", { peer: "192.0.2.250" })).text();
    expect(metrics).toContain('rate_limit_rejections_total{policy="login_lockout"} 20');
    expect(metrics).toContain('auth_failures_total{reason="locked"} 20');
  });

  test("the owner's two right passwords at once, one place left: both signed in, never told of a lock that is not there (probe 58a F5)", async () => {
    const target = lockoutOnlyApp();
    const session = await signUp(target);
    for (let i = 0; i < 9; i++) {
      const response = await send(target, "/api/auth/login", {
        body: { email: session.email, password: "nope-nope-nope" },
        peer: `198.51.100.${i + 1}`,
      });
      expect(response.status).toBe(401);
    }
    const both = await Promise.all(
      ["203.0.113.1", "203.0.113.2", "203.0.113.3"].map((peer) =>
        send(target, "/api/auth/login", {
          body: { email: session.email, password: STRONG_PASSWORD },
          peer,
        }),
      ),
    );
    expect(both.map((response) => response.status)).toEqual([200, 200, 200]);
    target.services.audit.flush();
    expect(
      target.db.$client
        .query("SELECT count(*) AS n FROM audit_events WHERE type = 'auth.login.locked'")
        .get(),
    ).toEqual({ n: 0 });
    // The tenth failure still locks the account.
    await send(target, "/api/auth/login", {
      body: { email: session.email, password: "nope-nope-nope" },
      peer: "198.51.100.10",
    });
    const locked = await send(target, "/api/auth/login", {
      body: { email: session.email, password: STRONG_PASSWORD },
      peer: "203.0.113.4",
    });
    expect(locked.status).toBe(429);
  });

  describe("the lockout across its 15-minute windows (probe 24b F1)", () => {
    const WINDOW = 15 * 60_000;
    const wrong = (target: TestApp, email: string, peer: string) =>
      send(target, "/api/auth/login", { body: { email, password: "nope-nope-nope" }, peer });
    const right = (target: TestApp, email: string) =>
      send(target, "/api/auth/login", {
        body: { email, password: STRONG_PASSWORD },
        peer: "198.51.100.250",
      });
    const lockedOut = async (response: Response) =>
      response.status === 429 && (await problem(response)).detail.includes("failed sign-ins");

    test("one failure in the window before: a burst still gets no more verdicts than the lockout allows", async () => {
      const clock = new ManualClock(1_000, WINDOW);
      current = buildTestApp({
        clock,
        env: { RATE_LIMIT_LOGIN: "1000", RATE_LIMIT_PER_MINUTE: "1000", RATE_LIMIT_BURST: "1000" },
      });
      const target = current;
      const session = await signUp(target);
      // One failure late in a window, then the next window begins.
      clock.advance(WINDOW - 60_000);
      expect((await wrong(target, session.email, "198.51.200.1")).status).toBe(401);
      clock.advance(90_000);
      const statuses = await Promise.all(
        Array.from({ length: 40 }, (_, i) => wrong(target, session.email, `198.51.${i}.9`)),
      );
      // The failure before still weighs ~0.97: nine more verdicts, and the account is locked.
      expect(statuses.filter((response) => response.status === 401)).toHaveLength(9);
      const refused = statuses.filter((response) => response.status === 429);
      expect(refused).toHaveLength(31);
      for (const response of refused) expect(await lockedOut(response)).toBe(true);
      expect(await lockedOut(await right(target, session.email))).toBe(true);
    });

    test("a lock made at the end of a window holds past the next one's start", async () => {
      const clock = new ManualClock(1_000, WINDOW);
      current = buildTestApp({ clock, env: { RATE_LIMIT_LOGIN: "1000" } });
      const session = await signUp(current);
      clock.advance(WINDOW - 120_000);
      for (let i = 0; i < 10; i++) {
        expect((await wrong(current, session.email, `198.51.100.${i + 1}`)).status).toBe(401);
      }
      expect(await lockedOut(await right(current, session.email))).toBe(true);
      // 30 s into the next window: the ten failures still weigh 9.7 of the last 15 minutes.
      clock.advance(150_000);
      expect(await lockedOut(await right(current, session.email))).toBe(true);
      // Once they weigh no more than nine (1.5 minutes in), one more verdict is given.
      clock.advance(75_000);
      expect((await right(current, session.email)).status).toBe(200);
    });
  });

  describe("the lockout decided in the store, before the password (probe 24c)", () => {
    const WINDOW = 15 * 60_000;
    // Nothing but the lockout refuses: the failures come from one address, which is not blocked.
    const RAISED = {
      RATE_LIMIT_LOGIN: "1000",
      RATE_LIMIT_PER_MINUTE: "1000",
      RATE_LIMIT_BURST: "1000",
      IP_BLOCK_FAILED_LOGINS: "0",
    };
    const login = (
      target: { app: TestApp["app"] },
      email: string,
      password: string,
      peer?: string,
    ) => send(target, "/api/auth/login", { body: { email, password }, peer });
    const isLock = async (response: Response) =>
      response.status === 429 && (await problem(response)).detail.includes("failed sign-ins");

    test("two processes on one file give one verdict between them each time the lock lifts", async () => {
      const clock = new ManualClock(1_000, WINDOW);
      current = buildTestApp({ clock, env: RAISED });
      const other = anotherInstance(current, { clock, env: RAISED });
      try {
        const session = await signUp(current);
        const processes = [current, other];
        clock.advance(WINDOW - 120_000);
        for (let i = 0; i < 10; i++) {
          const response = await login(processes[i % 2]!, session.email, "nope-nope-nope");
          expect(response.status).toBe(401);
        }
        // 1¾ minutes into the next window the lock has lifted, for one failure; then every 1½.
        clock.advance(120_000 + 105_000);
        for (let lift = 0; lift < 4; lift++) {
          const responses = await Promise.all(
            processes.map((process) => login(process, session.email, "nope-nope-nope")),
          );
          const verdicts = responses.filter((response) => response.status === 401);
          expect(verdicts).toHaveLength(1);
          const [refused] = responses.filter((response) => response.status !== 401);
          expect(await isLock(refused!)).toBe(true);
          clock.advance(90_000);
        }
      } finally {
        other.close();
      }
    });

    test("the instant the lock and the count could round apart is locked (5:00.000 into a window)", async () => {
      const clock = new ManualClock(1_000, WINDOW);
      current = buildTestApp({ clock, env: RAISED });
      const session = await signUp(current);
      // The sign-up's own sign-in is given back; nine failures late in one window...
      clock.advance(WINDOW - 60_000);
      for (let i = 0; i < 9; i++) {
        expect((await login(current, session.email, "nope-nope-nope")).status).toBe(401);
      }
      // ...three 200 s into the next (the nine weigh 7 then)...
      clock.advance(60_000 - 1_000 + 200_000);
      for (let i = 0; i < 3; i++) {
        expect((await login(current, session.email, "nope-nope-nope")).status).toBe(401);
      }
      // ...and at exactly 300 s, 9 × (1 − 300/900) + 3 rounds to 9 while the count has no room.
      clock.advance(100_000);
      for (let i = 0; i < 5; i++) {
        expect(await isLock(await login(current, session.email, "nope-nope-nope"))).toBe(true);
      }
      expect(await isLock(await login(current, session.email, STRONG_PASSWORD))).toBe(true);
    });

    test("a right password gives its count back: the owner's sign-ins never lock the account", async () => {
      const clock = new ManualClock(1_000, WINDOW);
      current = buildTestApp({ clock, env: RAISED });
      const session = await signUp(current);
      for (let i = 0; i < 9; i++) {
        expect((await login(current, session.email, "nope-nope-nope")).status).toBe(401);
      }
      for (let i = 0; i < 5; i++) {
        expect((await login(current, session.email, STRONG_PASSWORD)).status).toBe(200);
      }
      expect((await login(current, session.email, "nope-nope-nope")).status).toBe(401);
      expect(await isLock(await login(current, session.email, STRONG_PASSWORD))).toBe(true);
    });

    test("Retry-After on a locked sign-in is when the lock lifts, early or late in a window", async () => {
      for (const lockedAt of [1_000, WINDOW - 120_000]) {
        const clock = new ManualClock(0, WINDOW);
        const target = buildTestApp({ clock, env: RAISED });
        try {
          const session = await signUp(target);
          clock.advance(lockedAt);
          for (let i = 0; i < 10; i++) {
            expect((await login(target, session.email, "nope-nope-nope")).status).toBe(401);
          }
          const locked = await login(target, session.email, STRONG_PASSWORD);
          expect(await isLock(locked)).toBe(true);
          const wait = Number(locked.headers.get("retry-after"));
          // No RateLimit headers of the per-account limit saying there is room (probe 25f F4).
          expect(locked.headers.get("ratelimit")).toBeNull();
          expect(locked.headers.get("x-ratelimit-remaining")).toBeNull();
          // Until the ten weigh nine: 1½ minutes into the next window.
          expect(wait).toBe((WINDOW - lockedAt + 90_000) / 1000);
          clock.advance(wait * 1000 - 1_000);
          expect(await isLock(await login(target, session.email, STRONG_PASSWORD))).toBe(true);
          clock.advance(1_000);
          expect((await login(target, session.email, STRONG_PASSWORD)).status).toBe(200);
        } finally {
          target.close();
        }
      }
    });
  });

  test("an account's spent sign-in budget refuses a sign-in without spending or blocking its address, however often its owner retries (probes 24b F2, 46a F2)", async () => {
    current = buildTestApp({ env: { IP_BLOCK_RATE_LIMIT_REFUSALS: "3" } });
    const target = current;
    const session = await signUp(target);
    // Someone else spends the account's budget from addresses of their own.
    await failedSignInsFromElsewhere(target, session.email, 5);
    const victim = "198.51.100.77";
    // Twice the address's five sign-ins a minute: each refused for the account, none of them
    // counted against the address (they checked no password), so none is the address's refusal
    // and none a step towards its block (46a F2: the sixth on were, and the address was blocked).
    for (let i = 0; i < 10; i++) {
      const refused = await send(target, "/api/auth/login", {
        body: { email: session.email, password: STRONG_PASSWORD },
        peer: victim,
      });
      expect(refused.status).toBe(429);
      // Named apart from the per-address limit, in the headers and the metric (probe 24c F6).
      expect(refused.headers.get("ratelimit")).toStartWith('"login_account";r=0');
    }
    expect(await addressSignInsCounted(target, victim)).toBe(0);
    // Refused, but not blocked: the address's other requests pass, and no block was made.
    expect((await send(target, "/openapi.json", { peer: victim })).status).toBe(200);
    expect(target.db.$client.query("SELECT count(*) AS n FROM ip_blocks").get()).toEqual({ n: 0 });
    const metrics = await (await send(target, "/metrics", { peer: "192.0.2.250" })).text();
    // The sign-up's sign-in and four of the others' were the account's five; one more and ten.
    expect(metrics).toContain('rate_limit_rejections_total{policy="login_account"} 11');
    expect(metrics).toContain('rate_limit_rejections_total{policy="login"} 0\n');
  });

  test("a sign-in refused for its locked account gives its address's sign-in permit back (probe 46a F2)", async () => {
    // The account's own limit high, so ten failed sign-ins lock it before the limit refuses.
    current = buildTestApp({ env: { RATE_LIMIT_LOGIN: "100" } });
    const target = current;
    const session = await signUp(target);
    await failedSignInsFromElsewhere(target, session.email, 10);
    const victim = "198.51.100.78";
    for (let i = 0; i < 3; i++) {
      const locked = await send(target, "/api/auth/login", {
        body: { email: session.email, password: STRONG_PASSWORD },
        peer: victim,
      });
      expect(locked.status).toBe(429);
      expect(await locked.text()).toContain("Too many failed sign-ins for this account");
    }
    expect(await addressSignInsCounted(target, victim)).toBe(0);
  });

  test("10 failed logins from one address block it", async () => {
    // Aligned to the 15-minute violation window, so all ten failures share one.
    const clock = new ManualClock(1_000, 15 * 60_000);
    current = buildTestApp({ clock });
    for (let i = 0; i < 10; i++) {
      if (i === 5) clock.advance(120_000);
      await send(current, "/api/auth/login", {
        body: { email: `victim${i}@example.test`, password: "nope-nope-nope" },
        peer: "203.0.113.66",
      });
    }
    const blocked = await send(current, "/openapi.json", { peer: "203.0.113.66" });
    expect(blocked.status).toBe(403);
    expect((await problem(blocked)).code).toBe("IP_BLOCKED");
  });
});

describe("refresh and logout", () => {
  test("refresh rotates: a new pair, and the old refresh token is spent", async () => {
    current = buildTestApp();
    const session = await signUp(current);
    const rotated = await send(current, "/api/auth/refresh", {
      body: { refreshToken: session.refreshToken },
    });
    expect(rotated.status).toBe(200);
    const next = (await rotated.json()) as { accessToken: string; refreshToken: string };
    expect(next.refreshToken).not.toBe(session.refreshToken);
    expect(decodeJwt(next.accessToken).fam).toBe(decodeJwt(session.accessToken).fam);
    expect(
      (await send(current, "/api/auth/me", { headers: bearer(next.accessToken) })).status,
    ).toBe(200);
  });

  test("a reused refresh token revokes its whole family, access tokens included", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const session = await signUp(current);
    const rotated = (await (
      await send(current, "/api/auth/refresh", { body: { refreshToken: session.refreshToken } })
    ).json()) as { accessToken: string; refreshToken: string };

    // Past the grace in which the same token is a repeat (refresh-repeat.test.ts).
    clock.advance(REPEAT_GRACE_MS + 1);
    const replay = await send(current, "/api/auth/refresh", {
      body: { refreshToken: session.refreshToken },
    });
    expect(replay.status).toBe(401);
    // The thief's copy and the owner's newer tokens are all dead now.
    const newer = await send(current, "/api/auth/refresh", {
      body: { refreshToken: rotated.refreshToken },
    });
    expect(newer.status).toBe(401);
    for (const token of [session.accessToken, rotated.accessToken]) {
      const me = await send(current, "/api/auth/me", { headers: bearer(token) });
      expect(me.status).toBe(401);
      expect((await problem(me)).detail).toBe("The token is revoked.");
    }
    const reused = current.db.$client
      .query("SELECT actor FROM audit_events WHERE type = 'auth.refresh.reused'")
      .get() as { actor: string };
    expect(reused.actor).toBe(`user:${session.userId}`);
    expect(await (await send(current, "/metrics")).text()).toContain(
      'auth_failures_total{reason="refresh_reused"} 1',
    );
  });

  test("logout revokes the family: the access token and the refresh token stop working", async () => {
    current = buildTestApp();
    const session = await signUp(current);
    const other = await logIn(current, session.email, "10.7.0.1");
    const out = await send(current, "/api/auth/logout", {
      method: "POST",
      headers: bearer(session.accessToken),
    });
    expect(out.status).toBe(204);
    expect(
      (await send(current, "/api/auth/me", { headers: bearer(session.accessToken) })).status,
    ).toBe(401);
    const refresh = await send(current, "/api/auth/refresh", {
      body: { refreshToken: session.refreshToken },
    });
    expect(refresh.status).toBe(401);
    // Another session of the same user is another family and lives on.
    expect(
      (await send(current, "/api/auth/me", { headers: bearer(other.accessToken) })).status,
    ).toBe(200);
  });

  test("twenty logouts of one session at once end it once: one auth.logout row (probe 38c)", async () => {
    current = buildTestApp();
    const session = await signUp(current);
    const target = current;
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        send(target, "/api/auth/logout", { method: "POST", headers: bearer(session.accessToken) }),
      ),
    );
    // Each is answered as a logout is (the session is ended whichever ended it), or refused once
    // the session is seen ended.
    for (const answer of answers) expect([204, 401]).toContain(answer.status);
    current.services.audit.flush();
    const rows = current.db.$client
      .query("SELECT actor FROM audit_events WHERE type = 'auth.logout'")
      .all();
    expect(rows).toEqual([{ actor: `user:${session.userId}` }]);
  });

  test("an expired or unknown refresh token is refused", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const session = await signUp(current);
    expect(
      (await send(current, "/api/auth/refresh", { body: { refreshToken: "not-a-token" } })).status,
    ).toBe(401);
    clock.advance(31 * 24 * 60 * 60 * 1000);
    expect(
      (await send(current, "/api/auth/refresh", { body: { refreshToken: session.refreshToken } }))
        .status,
    ).toBe(401);
  });
});

describe("maintenance", () => {
  test("spent refresh tokens, old revocations and old blocks are pruned; live ones stay", async () => {
    const clock = new ManualClock();
    current = buildTestApp({ clock });
    const alive = await signUp(current);
    const gone = await signUp(current);
    await send(current, "/api/auth/logout", { method: "POST", headers: bearer(gone.accessToken) });
    current.services.ipBlocks.block({
      address: "192.0.2.200",
      reason: "old",
      ttlMs: 60_000,
      source: "admin",
    });
    const count = (table: string) =>
      (current!.db.$client.query(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    expect(count("refresh_tokens")).toBe(2);
    expect(count("auth_revocations")).toBe(1);
    expect(count("ip_blocks")).toBe(1);

    clock.advance(2 * 60 * 60 * 1000 + 1);
    current.services.runMaintenance();
    expect(count("refresh_tokens")).toBe(1); // the logged-out family's token
    expect(count("auth_revocations")).toBe(0);
    expect(count("ip_blocks")).toBe(1); // kept a week, for escalation
    clock.advance(8 * 24 * 60 * 60 * 1000);
    current.services.runMaintenance();
    expect(count("ip_blocks")).toBe(0);
    expect(count("refresh_tokens")).toBe(1); // 30 days: alive's token still valid
    const refreshed = await send(current, "/api/auth/refresh", {
      body: { refreshToken: alive.refreshToken },
    });
    expect(refreshed.status).toBe(200);
  });
});
