/**
 * One address, many spellings: every spelling a person reads as the same address must reach the
 * same account (register collides, login works, limits are shared), invisible and control
 * characters are refused without echoing them, and in the deployed profiles a duplicate
 * registration is answered byte for byte like a new one.
 */
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, spyOn, test } from "bun:test";
import { PART_PAUSE_MS } from "../../../src/db/write-parts";
import { refoldEmailKeys } from "../../../src/modules/auth/email-keys";
import { AuthService } from "../../../src/modules/auth/service";
import { buildTestApp, PRODUCTION_ENV, secondProcess, send, type TestApp } from "../../support/app";
import { STRONG_PASSWORD } from "../../support/auth";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { runToExit } from "../../support/process";
import { startOn } from "../../support/restart";

const open: TestApp[] = [];
afterEach(() => {
  for (const target of open.splice(0)) target.close();
});
function app(options: Parameters<typeof buildTestApp>[0] = {}): TestApp {
  const target = buildTestApp(options);
  open.push(target);
  return target;
}

interface Problem {
  code: string;
  errors?: { field: string; message: string }[];
}

let peerCounter = 0;
const nextPeer = () => `198.51.${Math.floor(++peerCounter / 250)}.${peerCounter % 250}`;

function register(
  target: Parameters<typeof send>[0],
  email: string,
  password = STRONG_PASSWORD,
  peer = nextPeer(),
) {
  return send(target, "/api/auth/register", { body: { email, password }, peer });
}

function login(
  target: Parameters<typeof send>[0],
  email: string,
  password = STRONG_PASSWORD,
  peer = nextPeer(),
) {
  return send(target, "/api/auth/login", { body: { email, password }, peer });
}

/** [canonical address, spellings that must all be that same account] */
const LOOK_ALIKES: [string, string[]][] = [
  [
    "t1@example.com",
    [
      "ｔ1@example.com", // fullwidth t
      "t１@example.com", // fullwidth 1
      "ｔ１@ｅｘａｍｐｌｅ.ｃｏｍ", // all fullwidth
      "T1@example.com", // case of the local part
      "t1@ＥＸＡＭＰＬＥ.com", // fullwidth capitals in the domain
      "t1@EXAMPLE.COM",
      "t1@example.com.", // the root's trailing dot
      "  t1@example.com\t", // surrounding whitespace
      "t1@example\uFF0Ecom", // fullwidth full stop
      "t1@example\u3002com", // ideographic full stop
      "t1@example.com\u3002", // the trailing dot as an ideographic full stop
      "t1@example.com\uFF61", // halfwidth ideographic full stop
    ],
  ],
  [
    "\u00e9mile@example.com", // é composed (NFC)
    [
      "e\u0301mile@example.com", // é decomposed (NFD)
      "\u00c9MILE@example.com", // upper case, composed
      "E\u0301MILE@example.com", // upper case, decomposed
      "\u00e9mile@Example.Com.",
    ],
  ],
  [
    "ann@b\u00fccher.example", // an internationalised domain
    [
      "ann@xn--bcher-kva.example", // its ASCII form
      "ann@BU\u0308CHER.example", // decomposed, upper case
      "ANN@b\u00fccher.example.",
    ],
  ],
  [
    "strasse@example.com",
    [
      "STRASSE@example.com",
      "stra\u00dfe@example.com", // ß folds to ss
      "STRA\u1e9eE@example.com", // the capital ẞ folds to ß, which folds again (probe 91i F4)
      "Stra\u1e9ee@example.com",
    ],
  ],
];

const CASES = LOOK_ALIKES.flatMap(([canonical, spellings]) =>
  spellings.map((spelling) => [canonical, spelling] as const),
);

describe("look-alike spellings are one account", () => {
  test.each(CASES)(
    "%s and %o: register is 409, login works, one row",
    async (canonical, spelling) => {
      const target = app();
      expect((await register(target, canonical)).status).toBe(201);
      const again = await register(target, spelling);
      expect(again.status).toBe(409);
      expect(((await again.json()) as Problem).code).toBe("CONFLICT");
      const signedIn = await login(target, spelling);
      expect(signedIn.status).toBe(200);
      const count = target.db.$client.query("SELECT count(*) AS n FROM users").get() as {
        n: number;
      };
      expect(count.n).toBe(1);
      // And the other way round: the spelling first, the canonical address collides with it.
      const reverse = app();
      expect((await register(reverse, spelling)).status).toBe(201);
      expect((await register(reverse, canonical)).status).toBe(409);
      expect((await login(reverse, canonical)).status).toBe(200);
    },
  );

  test("concurrent registrations of different spellings make exactly one account", async () => {
    const target = app();
    const spellings = LOOK_ALIKES[0]![1];
    const answers = await Promise.all(spellings.map((spelling) => register(target, spelling)));
    const statuses = answers.map((response) => response.status).sort();
    expect(statuses.filter((status) => status === 201)).toHaveLength(1);
    expect(statuses.filter((status) => status === 409)).toHaveLength(spellings.length - 1);
    const rows = target.db.$client.query("SELECT email, email_key AS emailKey FROM users").all();
    expect(rows).toHaveLength(1);
  });

  test("the stored address is the normalised one: NFKC, the domain in ASCII, no trailing dot", async () => {
    const target = app();
    const created = await register(target, "  E\u0301mile@BU\u0308CHER.Example. ");
    expect(created.status).toBe(201);
    expect(((await created.json()) as { email: string }).email).toBe(
      "\u00c9mile@xn--bcher-kva.example",
    );
    const row = target.db.$client.query("SELECT email, email_key AS emailKey FROM users").get();
    expect(row).toEqual({
      email: "\u00c9mile@xn--bcher-kva.example",
      emailKey: "\u00e9mile@xn--bcher-kva.example",
    });
  });

  test("the per-account login limit is shared by every spelling", async () => {
    const target = app();
    expect((await register(target, "t1@example.com")).status).toBe(201);
    const spellings = LOOK_ALIKES[0]![1];
    const statuses: number[] = [];
    for (const spelling of spellings.slice(0, 6)) {
      statuses.push((await login(target, spelling, "wrong-password-123")).status);
    }
    // 5 per minute per account, from any address and in any spelling.
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(statuses[5]).toBe(429);
  });
});

/** Spellings with a character that is invisible, a control, or not a character at all. */
const INVISIBLE: [string, string][] = [
  ["zero-width space", "t1\u200b@example.com"],
  ["zero-width non-joiner", "t\u200c1@example.com"],
  ["zero-width joiner", "t1\u200d@example.com"],
  ["word joiner", "\u2060t1@example.com"],
  ["byte order mark", "t1\ufeff@example.com"],
  ["soft hyphen", "t\u00ad1@example.com"],
  ["right-to-left override", "t1\u202e@example.com"],
  ["Hangul filler", "t1\u3164@example.com"],
  ["variation selector", "t1\ufe0f@example.com"],
  ["NUL", "t1\u0000@example.com"],
  ["BEL", "t1\u0007@example.com"],
  ["DEL", "t1\u007f@example.com"],
  ["line separator", "t1\u2028@example.com"],
  ["private use", "t1\ue000@example.com"],
  ["zero-width space in the domain", "t1@exa\u200bmple.com"],
  ["no-break space inside", "t1\u00a0x@example.com"],
  // Blank-looking characters that Unicode calls ordinary symbols or punctuation.
  ["Braille pattern blank", "t1\u2800@example.com"],
  ["musical null notehead", "t1\u{1D159}@example.com"],
  ["SignWriting blank", "t1\u{1DA7F}@example.com"],
  ["Tibetan tsheg bstar", "t1\u0F0C@example.com"],
  ["Braille blank in the domain", "t1@exa\u2800mple.com"],
  ["Khitan small script filler", "t1\u{16FE4}@example.com"],
  ["blank Khitan character", "t1\u{18CFF}@example.com"],
  ["Khmer coeng after Latin", "t1\u17D2@example.com"],
  ["Tai Tham sakot after Latin", "t1\u1A60@example.com"],
  ["Tifinagh joiner after Latin", "t1\u2D7F@example.com"],
  ["Sundanese virama after Latin", "t1\u1BAB@example.com"],
  ["a mark first", "\u0301t1@example.com"],
  ["a mark after the dot of the domain", "t1@example.\u0301com"],
];

describe("invisible and control characters in an email are refused", () => {
  test.each(INVISIBLE)(
    "%s: 422 naming body/email, never echoing the value",
    async (_name, email) => {
      const target = app();
      const response = await register(target, email);
      expect(response.status).toBe(422);
      const text = await response.text();
      const body = JSON.parse(text) as Problem;
      expect(body.code).toBe("VALIDATION_FAILED");
      expect(body.errors?.map((error) => error.field)).toEqual(["body/email"]);
      expect(text).not.toContain("t1");
      expect(text).not.toContain("example.com");
      expect(target.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 0 });
    },
  );

  test("a lone surrogate sent as a raw JSON escape is refused, not turned into U+FFFD", async () => {
    const target = app();
    const response = await send(target, "/api/auth/register", {
      body: `{"email":"t1\\ud800@example.com","password":"${STRONG_PASSWORD}"}`,
      peer: nextPeer(),
    });
    expect(response.status).toBe(422);
    const body = (await response.json()) as Problem;
    expect(body.errors?.map((error) => error.field)).toEqual(["body/email"]);
  });

  test("a look-alike with an invisible character cannot sign in to the real account", async () => {
    const target = app();
    expect((await register(target, "t1@example.com")).status).toBe(201);
    expect((await login(target, "t1\u200b@example.com")).status).toBe(401);
  });
});

describe("passwords with lone surrogates are refused", () => {
  test.each([
    ["a high surrogate", "\\ud800"],
    ["a low surrogate", "\\udc00"],
    ["U+FFFD itself", "\\ufffd"],
  ])("%s in the raw JSON: 422 naming body/password", async (_name, suffix) => {
    const target = app();
    const response = await send(target, "/api/auth/register", {
      body: `{"email":"pw@example.com","password":"${STRONG_PASSWORD}${suffix}"}`,
      peer: nextPeer(),
    });
    expect(response.status).toBe(422);
    const text = await response.text();
    const body = JSON.parse(text) as Problem;
    expect(body.code).toBe("VALIDATION_FAILED");
    expect(body.errors?.[0]?.field).toBe("body/password");
    expect(body.errors?.[0]?.message).toStartWith("invalid_characters");
    expect(text).not.toContain(STRONG_PASSWORD);
    expect(target.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 0 });
  });

  test("a password sent with \\ud800 cannot be used with \\udbff: nothing collapses to U+FFFD", async () => {
    const target = app();
    const raw = (suffix: string) =>
      `{"email":"pw@example.com","password":"${STRONG_PASSWORD}${suffix}"}`;
    const registered = await send(target, "/api/auth/register", {
      body: raw("\\ud800"),
      peer: nextPeer(),
    });
    expect(registered.status).toBe(422);
    const other = await send(target, "/api/auth/login", { body: raw("\\udbff"), peer: nextPeer() });
    expect(other.status).toBe(401);
  });
});

describe("addresses that read as others (probe 90b)", () => {
  test("a local part mixing scripts (Latin with Han, kana or Hangul aside), digits included, is refused, naming the rule, never the address", async () => {
    const target = app();
    for (const email of [
      "\u0430dmin@example.com", // Cyrillic а, then Latin
      "adm\u03b9n@example.com", // Greek iota
      "p\u0430y.\u0440al@example.com",
      "\u0570ello@example.com", // Armenian h
      "\u13aaBC@example.com", // Cherokee A
      "\ua4eebc@example.com", // Lisu A
      "\u0430\u03b1@example.com", // Cyrillic with Greek
      "\u2ca3aypal@example.com", // Coptic with Latin (probe 90h F1)
      "\u1401bc@example.com", // Canadian Aboriginal with Latin
      "\u2d30bc@example.com", // Tifinagh with Latin
      "\u05d0bc@example.com", // Hebrew with Latin
      "\u3042\uac00\u0430@example.com", // kana, Hangul and Cyrillic
      "j\u1040e@example.com", // a Myanmar digit zero among Latin letters (probe 90j F1)
      "j\u0966e@example.com", // a Devanagari digit zero
    ]) {
      const refused = await register(target, email);
      expect({ email, status: refused.status }).toEqual({ email, status: 422 });
      const body = await refused.text();
      expect(JSON.parse(body)).toMatchObject({
        code: "VALIDATION_FAILED",
        errors: [{ field: "body/email", message: expect.stringContaining("look alike") }],
      });
      expect(body).not.toContain(email.split("@")[0]!);
    }
    expect(target.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 0 });
    // One script each, with digits, punctuation and scripts that copy no Latin letter: accepted.
    for (const email of [
      "\u0432\u0435\u0440\u0430@example.com", // вера, all Cyrillic
      "\u03b1\u03b8\u03b7\u03bd\u03b1-2@example.com", // Greek
      "taro\u592a\u90ce@example.com", // Latin with Han
      "\u305f\u308d\u3046\u592a\u90ce\u30bf\u30ed\u30a6@example.com", // kana and Han
      "kim\uae40\u91d1@example.com", // Latin, Hangul and Han
      "\uc774\uc9c0\uc740@example.com", // 이지은: its syllables read as themselves, not as jamo
      "\u05d3\u05e0\u05d4@example.com", // Hebrew alone
      "\u0131\u015f\u0131k@example.com", // Turkish ışık: Latin
      "\u00e9mile.o'neil+tag@example.com",
    ]) {
      expect({ email, status: (await register(target, email)).status }).toEqual({
        email,
        status: 201,
      });
    }
  });

  test("a one-script address that reads as one already registered is taken: 409 here, a new account's answer in staging, and no account", async () => {
    const target = app();
    expect((await register(target, "pay@example.com")).status).toBe(201);
    expect((await register(target, "bepa@example.com")).status).toBe(201);
    // рау and вера in Cyrillic read as pay and bepa; ⲣⲁⲩ in Coptic and ϳοε in Greek (with its
    // yot), еѵа in Cyrillic (with its izhitsa) and ꮲꭺꭰ in Cherokee small letters as pad (90h F1).
    for (const taken of [
      "joe",
      "eva",
      "pad",
      "h\u00e4cker",
      "\u00f3ko",
      "not",
      "paypal",
      "google",
      "john-smith",
    ]) {
      expect((await register(target, `${taken}@example.com`)).status).toBe(201);
    }
    for (const email of [
      "\u0440\u0430\u0443@example.com",
      "\u0412\u0415\u0420\u0410@example.com",
      "\u2ca3\u2c81\u2ca9@example.com",
      "\u03f3\u03bf\u03b5@example.com",
      "\u0435\u0475\u0430@example.com",
      "\uabb2\uab7a\uab70@example.com",
      // Letters with marks read as their base letters' readings with the marks (probe 90j F2),
      // and letters the list lacked.
      "\u04bb\u04d3\u0441\u043a\u0435\u0433@example.com", // һӓскег
      "\u03cc\u03ba\u03bf@example.com", // όκο
      "\u03b7\u03bf\u03c4@example.com", // ηοτ
      "\u04bd\u0475\u0430@example.com", // ҽѵа
      "paypa\u01c0@example.com", // a Latin dental click for l
      "paypa\u4e28@example.com", // Han's vertical stroke for l, beside Latin as Han may be
      "g\u3007\u3007gle@example.com", // Han's circle for o (probe 90m F1)
      "paypa\u3021@example.com", // a Hangzhou numeral one for l
      "john\u4e00smith@example.com", // Han's one for a hyphen
      "paypa\u3163@example.com", // a Hangul vowel for l, beside Latin as Hangul may be
      "john\u3127smith@example.com", // Bopomofo's i, drawn as Han's one (probe 90n F6)
      "PAYPA\u3125@example.com", // Bopomofo's eng for L
      "g\u11bc\u11bcgle@example.com", // Hangul's final ieung for o
    ]) {
      const again = await register(target, email);
      expect({ email, status: again.status }).toEqual({ email, status: 409 });
    }
    expect(target.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 11 });
    target.services.audit.flush();
    expect(
      target.db.$client
        .query("SELECT detail FROM audit_events WHERE type = 'auth.register.duplicate'")
        .all(),
    ).toEqual(Array.from({ length: 19 }, () => ({ detail: '{"lookAlike":true}' })));
    // At another domain it is its own address.
    expect((await register(target, "\u0440\u0430\u0443@example.org")).status).toBe(201);

    const STAGING = { ...PRODUCTION_ENV, APP_ENV: "staging" };
    const clock = new ManualClock();
    const existing = app({ env: STAGING, clock });
    const fresh = app({ env: STAGING, clock });
    expect(
      (await register(existing, "pay@example.com", STRONG_PASSWORD, "192.0.2.200")).status,
    ).toBe(201);
    const strip = async (response: Response) => ({
      status: response.status,
      body: await response.text(),
    });
    const lookAlike = "\u0440\u0430\u0443@example.com";
    const asTaken = await strip(await register(existing, lookAlike, STRONG_PASSWORD, "192.0.2.10"));
    const asNew = await strip(await register(fresh, lookAlike, STRONG_PASSWORD, "192.0.2.10"));
    expect(asTaken).toEqual(asNew);
    expect(existing.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 1 });
  });
});

describe("an address registered after its look-alike", () => {
  const cyrillicPay = "\u0440\u0430\u0443@example.com"; // рау
  const greekPay = "\u03c1\u03b1\u0443@example.com"; // ρα and a Cyrillic у: mixed, refused
  const readings = (target: TestApp) =>
    target.db.$client.query("SELECT email, reading FROM users ORDER BY email").all();

  test("the Latin address, or another script's look-alike, is taken once the look-alike is", async () => {
    const target = app();
    expect((await register(target, cyrillicPay)).status).toBe(201);
    expect((await register(target, "pay@example.com")).status).toBe(409);
    expect((await register(target, "PAY@example.com")).status).toBe(409);
    // ρау mixes Greek with Cyrillic: refused as such, not as a duplicate.
    expect((await register(target, greekPay)).status).toBe(422);
    // ⲣⲁⲩ in Coptic reads as pay too.
    expect((await register(target, "\u2ca3\u2c81\u2ca9@example.com")).status).toBe(409);
    expect((await register(target, "pay@example.org")).status).toBe(201);
    expect(target.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 2 });
    target.services.audit.flush();
    expect(
      target.db.$client
        .query("SELECT detail FROM audit_events WHERE type = 'auth.register.duplicate'")
        .all(),
    ).toEqual(Array.from({ length: 3 }, () => ({ detail: '{"lookAlike":true}' })));
    // The same address again is a duplicate, not a look-alike.
    expect((await register(target, cyrillicPay)).status).toBe(409);
    target.services.audit.flush();
    expect(
      target.db.$client
        .query(
          "SELECT detail FROM audit_events WHERE type = 'auth.register.duplicate' ORDER BY id DESC LIMIT 1",
        )
        .get(),
    ).toEqual({ detail: "{}" });
    // The first account still signs in; nothing was made for the look-alikes.
    expect((await login(target, cyrillicPay)).status).toBe(200);
    expect((await login(target, "pay@example.com")).status).toBe(401);
  });

  test("capitals, a second fold, a dot on a dotted letter and letters drawn as punctuation are read too (probe 91a)", async () => {
    const target = app();
    const pairs: [string, string][] = [
      ["ian", "\ua7aean"], // Ɪan: a capital whose small letter is listed
      ["google", "\ua7acoogle"], // Ɡoogle
      ["lol", "\u053c\u0555\u053c"], // ԼՕԼ, Armenian capitals
      ["pop", "\u0440\u1c82\u0440"], // рᲂр, a Cyrillic narrow o
      ["strasse", "STRA\u1e9eE"], // STRAẞE: one fold leaves ß
      ["ski", "\u0455\u043a\u0456\u0307"], // ѕкі̇: a dot above a dotted і
      ["jax", "\u0458\u0307\u0430\u0445"], // ј̇ах
      ["o'brien", "o\u02bcbrien"], // a modifier letter apostrophe
      ["john_smith", "john\u02cdsmith"], // a modifier letter low macron
      ["pay!", "pay\u01c3"], // a Latin retroflex click
    ];
    for (const [latin] of pairs) {
      expect((await register(target, `${latin}@example.com`)).status).toBe(201);
    }
    for (const [latin, lookAlike] of pairs) {
      const again = await register(target, `${lookAlike}@example.com`);
      expect({ latin, status: again.status }).toEqual({ latin, status: 409 });
    }
    // And the other way round, each look-alike first.
    const other = app();
    for (const [, lookAlike] of pairs) {
      expect((await register(other, `${lookAlike}@example.com`)).status).toBe(201);
    }
    for (const [latin] of pairs) {
      const again = await register(other, `${latin}@example.com`);
      expect({ latin, status: again.status }).toEqual({ latin, status: 409 });
    }
  });

  test("a reading moved in the file takes no free address; an address too long for one gets none (probe 91a F4, F5)", async () => {
    const target = app();
    expect((await register(target, "lol@example.com")).status).toBe(201);
    const sqlite = target.db.$client;
    const { reading } = sqlite.query<{ reading: string }, []>("SELECT reading FROM users").get()!;
    const version = reading.slice(0, reading.indexOf(":"));
    sqlite.run(`UPDATE users SET reading = '${version}:ceo@example.com'`);
    expect((await register(target, "ceo@example.com")).status).toBe(201);
    expect((await register(target, "CEO@example.com")).status).toBe(409);

    // A row written into the file with an address of a million characters and no reading.
    sqlite
      .query(
        `INSERT INTO users (id, email, email_key, password_hash, role, created_at, updated_at)
         VALUES ('long', ?, NULL, 'h', 'user', 0, 0)`,
      )
      .run(`${"\u04d3".repeat(1_000_000)}@example.com`);
    const restarted = secondProcess(target);
    restarted.close();
    expect(sqlite.query("SELECT reading FROM users WHERE id = 'long'").get()).toEqual({
      reading: `${version}:`,
    });
  });

  test("an older file's accounts, and readings of another version, are read again at start", async () => {
    const target = app();
    expect((await register(target, cyrillicPay)).status).toBe(201);
    expect((await register(target, "joe@example.com")).status).toBe(201);
    const [current] = readings(target) as { reading: string }[];
    const version = current!.reading.slice(0, current!.reading.indexOf(":"));
    expect(version).toMatch(/^[0-9a-f]{12}$/);
    // As a file from before readings were stored, and one stored by a release that read otherwise.
    target.db.$client.run(`UPDATE users SET reading = NULL WHERE email = '${cyrillicPay}'`);
    target.db.$client.run("UPDATE users SET reading = '000000000000:joe' WHERE email LIKE 'joe@%'");
    const restarted = secondProcess(target);
    try {
      expect(readings(target)).toEqual([
        { email: "joe@example.com", reading: `${version}:joe@example.com` },
        { email: cyrillicPay, reading: `${version}:pay@example.com` },
      ]);
      const again = await restarted.app.handle(
        new Request("http://localhost/api/auth/register", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email: "pay@example.com", password: STRONG_PASSWORD }),
        }),
      );
      expect(again.status).toBe(409);
    } finally {
      restarted.close();
    }
  });

  test("a row written into the file with a reading takes no address", async () => {
    const target = app();
    expect((await register(target, "joe@example.com")).status).toBe(201);
    const { reading } = target.db.$client
      .query<{ reading: string }, []>("SELECT reading FROM users")
      .get()!;
    const payReading = reading.replace("joe@", "pay@");
    target.db.$client
      .query(
        `INSERT INTO users (id, email, email_key, password_hash, role, reading, created_at, updated_at)
         VALUES ('forged', 'x@example.com', 'x@example.com', 'h', 'user', ?, 0, 0)`,
      )
      .run(payReading);
    expect((await register(target, "pay@example.com")).status).toBe(201);
  });
});

describe("enumeration resistance (staging and production)", () => {
  const STAGING = { ...PRODUCTION_ENV, APP_ENV: "staging" };
  /** Status, every header but the request id, and the body's bytes. */
  async function snapshot(response: Response) {
    const headers = [...response.headers.entries()].filter(([name]) => name !== "x-request-id");
    return { status: response.status, headers, body: await response.text() };
  }

  test.each(CASES)(
    "%s exists, %o registers: byte-identical to a new account",
    async (canonical, spelling) => {
      const clock = new ManualClock();
      const existing = app({ env: STAGING, clock });
      expect((await register(existing, canonical, STRONG_PASSWORD, "192.0.2.200")).status).toBe(
        201,
      );
      const fresh = app({ env: STAGING, clock });
      const peer = "192.0.2.10";
      const asDuplicate = await snapshot(await register(existing, spelling, STRONG_PASSWORD, peer));
      const asNew = await snapshot(await register(fresh, spelling, STRONG_PASSWORD, peer));
      expect(asDuplicate).toEqual(asNew);
      expect(asNew.status).toBe(201);
      expect(existing.db.$client.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 1 });
    },
  );

  test("the same password hashing for a new and an existing address", async () => {
    const target = app({ env: PRODUCTION_ENV });
    expect((await register(target, "t1@example.com")).status).toBe(201);
    const hash = spyOn(Bun.password, "hash");
    try {
      await register(target, "ｔ1@example.com");
      const forDuplicate = hash.mock.calls.length;
      await register(target, "t2@example.com");
      const forNew = hash.mock.calls.length - forDuplicate;
      expect(forDuplicate).toBe(1);
      expect(forNew).toBe(1);
    } finally {
      hash.mockRestore();
    }
  });
});

describe("the unknown-email login's dummy hash", () => {
  test("is made when the service is built, before any login", async () => {
    const target = app();
    const deadline = Date.now() + 5_000;
    while (!target.services.auth.loginPrepared && Date.now() < deadline) await Bun.sleep(5);
    expect(target.services.auth.loginPrepared).toBe(true);
    // The first unknown-email login verifies against it: it hashes nothing itself.
    const hash = spyOn(Bun.password, "hash");
    const verify = spyOn(Bun.password, "verify");
    try {
      expect((await login(target, "nobody@example.com")).status).toBe(401);
      expect(hash).not.toHaveBeenCalled();
      expect(verify).toHaveBeenCalledTimes(1);
    } finally {
      hash.mockRestore();
      verify.mockRestore();
    }
  });
});

describe("rows stored before normalisation", () => {
  test("are normalised at start; rows that collide with each other are all set aside, and hold the address against registration (probe 93g F2: the oldest by a column no seal covers took it)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    // Sealed as Palisade sealed them: only the address columns are of another era.
    const seal = (id: string, email: string) =>
      target.services.credentialSeal.account({
        id,
        email,
        emailKey: null,
        passwordHash: "x",
        role: "user",
      });
    const insert = (id: string, email: string, at: number) =>
      sqlite.run(
        `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
         VALUES (?, ?, NULL, 'x', 'user', ?, ?, ?)`,
        [id, email, seal(id, email), at, at],
      );
    insert("old-nfc", "\u00e9mile@example.com", 1);
    insert("old-nfd", "e\u0301mile@example.com", 2);
    insert("old-width", "ｔ1@EXAMPLE.com", 3);
    insert("old-invisible", "t\u200b9@example.com", 4);
    // A second process starting on the file: what the next start of the service does.
    const next = secondProcess(target);
    try {
      const rows = sqlite
        .query("SELECT id, email, email_key AS emailKey FROM users ORDER BY created_at")
        .all();
      expect(rows).toEqual([
        { id: "old-nfc", email: "\u00e9mile@example.com", emailKey: null },
        { id: "old-nfd", email: "e\u0301mile@example.com", emailKey: null },
        { id: "old-width", email: "t1@example.com", emailKey: "t1@example.com" },
        { id: "old-invisible", email: "t\u200b9@example.com", emailKey: null },
      ]);
      expect(next.services.auth.findUserByEmail("E\u0301MILE@example.com")).toBeNull();
      // Neither has it, and no one else may take it: an operator decides (by --id).
      for (const email of ["e\u0301mile@example.com", "\u00c9MILE@example.com"]) {
        const duplicate = await send(next, "/api/auth/register", {
          body: { email, password: STRONG_PASSWORD },
          peer: nextPeer(),
        });
        expect({ email, status: duplicate.status }).toEqual({ email, status: 409 });
      }
    } finally {
      next.close();
    }
  });

  test("keys an earlier release folded once (capital ẞ kept as ß) are folded again at start; a collision is left for an operator (probe 91i F4)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const { credentialSeal } = target.services;
    // What an earlier release stored for an address typed with ẞ: its key folded once, sealed.
    const asFoldedOnce = (email: string, keptKey: string) => {
      const row = sqlite
        .query<{ id: string; passwordHash: string; role: string }, [string]>(
          "SELECT id, password_hash AS passwordHash, role FROM users WHERE email = ?",
        )
        .get(email)!;
      sqlite.run("UPDATE users SET email_key = ?, seal = ? WHERE id = ?", [
        keptKey,
        credentialSeal.account({ ...row, email, emailKey: keptKey }),
        row.id,
      ]);
      return row.id;
    };
    expect((await register(target, "GRO\u1e9eE@example.com")).status).toBe(201);
    const once = asFoldedOnce("GRO\u1e9eE@example.com", "gro\u00dfe@example.com");
    // Two accounts an earlier release let be: `strasse` and `STRAẞE` had two keys.
    expect((await register(target, "strasse@example.com")).status).toBe(201);
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, created_at, updated_at)
       SELECT 'second', 'STRA\u1e9eE@example.com', 'stra\u00dfe@example.com', password_hash, role,
              created_at, updated_at FROM users WHERE email = 'strasse@example.com'`,
    );
    asFoldedOnce("STRA\u1e9eE@example.com", "stra\u00dfe@example.com");
    // A genuine account's key held by a row written into the file: neither changes, so that the
    // file put back as it was undoes it (probe 92a F3: the forged row set the genuine one aside;
    // 92c F1: taking the key from it made the tamper's undoing fail); the next start tries again.
    expect((await register(target, "PLA\u1e9eE@example.com")).status).toBe(201);
    const plasse = asFoldedOnce("PLA\u1e9eE@example.com", "pla\u00dfe@example.com");
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
       SELECT 'forged-holder', 'plasse@example.com', 'plasse@example.com', password_hash, 'admin',
              'x', created_at, updated_at FROM users WHERE email = 'strasse@example.com'`,
    );
    // A genuine account whose role was written into the file: left as it is, so that setting the
    // role back makes it match its seal again (probe 92a F2: its key was folded, for good).
    expect((await register(target, "MA\u1e9e@example.com")).status).toBe(201);
    const tampered = asFoldedOnce("MA\u1e9e@example.com", "ma\u00df@example.com");
    sqlite.run("UPDATE users SET role = 'admin' WHERE id = ?", [tampered]);
    // Written into the file without its seal: left as it is, refused.
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
       SELECT 'forged', 'KLA\u1e9eE@example.com', 'kla\u00dfe@example.com', password_hash, role,
              seal, created_at, updated_at FROM users WHERE email = 'strasse@example.com'`,
    );
    // Before the next start, `große` finds no account by any spelling but the capital's.
    expect((await login(target, "gro\u00dfe@example.com")).status).toBe(401);
    const keys = () =>
      sqlite.query("SELECT id, email_key AS emailKey FROM users ORDER BY email").all();
    const asStored = keys();
    // While rows that do not match their seals are in the file, no key moves: one of them may be
    // the holder of an address, its key moved away in the file (probe 93a F1). Each is named.
    const held = startOn(target.databasePath, { AUDIT_SECRET_KEY: target.config.audit.secretKey });
    try {
      expect(keys()).toEqual(asStored);
      const said = held.logs.entries.find((entry) =>
        String(entry.msg).startsWith(
          "accounts whose address folds again (capital ẞ) are left as they are",
        ),
      ) as { level: string; users: string[] } | undefined;
      expect(said?.level).toBe("error");
      expect([...(said?.users ?? [])].sort()).toEqual([once, plasse].sort());
      expect(held.services.auth.findUserByEmail("grosse@example.com")).toBeNull();
    } finally {
      held.close();
    }
    // Its role set back as it was sealed, the tampered account matches its seal again; the rows
    // written into the file removed (db:verify names them), the next start folds the keys.
    sqlite.run("UPDATE users SET role = 'user' WHERE id = ?", [tampered]);
    expect(target.services.auth.findUser(tampered)?.email).toBe("MA\u1e9e@example.com");
    sqlite.run("DELETE FROM users WHERE id IN ('forged', 'forged-holder')");
    const next = secondProcess(target);
    try {
      expect(keys()).toEqual([
        { id: once, emailKey: "grosse@example.com" },
        { id: tampered, emailKey: "mass@example.com" },
        { id: plasse, emailKey: "plasse@example.com" },
        { id: "second", emailKey: "stra\u00dfe@example.com" },
        { id: expect.any(String), emailKey: "strasse@example.com" },
      ]);
      for (const spelling of ["GRO\u1e9eE", "gro\u00dfe", "GROSSE", "grosse"]) {
        const signedIn = await login(next, `${spelling}@example.com`);
        expect({ spelling, status: signedIn.status }).toEqual({ spelling, status: 200 });
      }
      expect(next.services.auth.findUser(once)?.email).toBe("GRO\u1e9eE@example.com");
      expect(next.services.auth.findUserByEmail("MA\u1e9e@example.com")?.id).toBe(tampered);
      expect(next.services.auth.findUserByEmail("PLA\u1e9eE@example.com")?.id).toBe(plasse);
      // The account that held `strasse` keeps it; the other is left on its old key.
      expect(next.services.auth.findUserByEmail("STRA\u1e9eE@example.com")?.email).toBe(
        "strasse@example.com",
      );
      expect(next.services.auth.findUser("second")?.email).toBe("STRA\u1e9eE@example.com");
    } finally {
      next.close();
    }
  });

  test("an operator names a set-aside account by its id; its own stored spelling is refused, never taken for the account holding the key (probe 92a F1)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const { credentialSeal } = target.services;
    expect((await register(target, "strasse@example.com")).status).toBe(201);
    const holder = target.services.auth.findUserByEmail("strasse@example.com")!.id;
    // The account an earlier release let be beside it, its key folded once.
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, created_at, updated_at)
       SELECT 'second', 'STRA\u1e9eE@example.com', 'stra\u00dfe@example.com', password_hash, role,
              created_at, updated_at FROM users WHERE id = ?`,
      [holder],
    );
    const row = sqlite
      .query<{ passwordHash: string }, []>(
        "SELECT password_hash AS passwordHash FROM users WHERE id = 'second'",
      )
      .get()!;
    sqlite.run("UPDATE users SET seal = ? WHERE id = 'second'", [
      credentialSeal.account({
        id: "second",
        email: "STRA\u1e9eE@example.com",
        emailKey: "stra\u00dfe@example.com",
        passwordHash: row.passwordHash,
        role: "user",
      }),
    ]);
    secondProcess(target).close();
    const env = {
      DATABASE_PATH: target.databasePath,
      AUDIT_SECRET_KEY: target.config.audit.secretKey,
    };
    const listed = await cliInProcess(["users:list"], env);
    expect(listed.stdout.split("\n").find((line) => line.startsWith("second "))).toContain(
      "set aside (its address collides with another account's",
    );
    const role = (holderRole: string) =>
      expect(sqlite.query("SELECT role FROM users WHERE id = ?").get(holder)).toEqual({
        role: holderRole,
      });
    const promoteTyped = await cliInProcess(
      ["users:role", "--email", "STRA\u1e9eE@example.com", "--role", "admin"],
      env,
    );
    expect(promoteTyped.code).toBe(1);
    expect(promoteTyped.stderr).toContain(
      "the address is also that of STRA\u1e9eE@example.com (second), set aside at start",
    );
    role("user");
    const keyTyped = await cliInProcess(
      ["keys:create", "--name", "k", "--scopes", "chat", "--owner", "STRA\u1e9eE@example.com"],
      env,
    );
    expect(keyTyped.code).toBe(1);
    expect(sqlite.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({ n: 0 });
    const eraseTyped = await cliInProcess(
      ["users:erase", "--email", "STRA\u1e9eE@example.com", "--yes"],
      env,
    );
    expect(eraseTyped.code).toBe(1);
    expect(target.services.auth.findUser(holder)).not.toBeNull();
    // Any other spelling may mean either too (probe 92f F3): refused; the holder by its id.
    const promoteSpelt = await cliInProcess(
      ["users:role", "--email", "STRASSE@example.com", "--role", "admin"],
      env,
    );
    expect(promoteSpelt.code).toBe(1);
    expect(promoteSpelt.stderr).toContain(`and strasse@example.com (${holder}) holds it`);
    role("user");
    const promoteHolder = await cliInProcess(
      ["users:role", "--id", holder, "--role", "admin"],
      env,
    );
    expect(promoteHolder.code).toBe(0);
    role("admin");
    // By its id, the set-aside account itself.
    expect(
      (
        await cliInProcess(
          ["users:role", "--id", "second", "--email", "x@example.com", "--role", "admin"],
          env,
        )
      ).code,
    ).toBe(2);
    const promoteAside = await cliInProcess(
      ["users:role", "--id", "second", "--role", "admin"],
      env,
    );
    expect(promoteAside.code).toBe(0);
    expect(sqlite.query("SELECT role FROM users WHERE id = 'second'").get()).toEqual({
      role: "admin",
    });
    const eraseAside = await cliInProcess(["users:erase", "--id", "second", "--yes"], env);
    expect(eraseAside.code).toBe(0);
    expect(sqlite.query("SELECT count(*) AS n FROM users WHERE id = 'second'").get()).toEqual({
      n: 0,
    });
    expect(target.services.auth.findUser(holder)).not.toBeNull();
    // With no set-aside account beside it, the address names the holder, and keys:create says
    // which account it gave the key to.
    const ownedKey = await cliInProcess(
      ["keys:create", "--name", "k", "--scopes", "chat", "--owner", "STRASSE@example.com"],
      env,
    );
    expect(ownedKey.code).toBe(0);
    expect(ownedKey.stdout).toContain(`owner strasse@example.com (${holder})`);
  });

  test("a tampered key holder keeps its key, and undone it matches its seal again: neither the refold nor the start's normalisation takes the key from it (probe 92c F1); a spelling of the address as set aside before normalisation is refused too (92c F2)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const { credentialSeal } = target.services;
    expect((await register(target, "strasse@example.com")).status).toBe(201);
    expect((await register(target, "emile@example.com")).status).toBe(201);
    const holderOf = (email: string) => target.services.auth.findUserByEmail(email)!.id;
    const strasse = holderOf("strasse@example.com");
    const emile = holderOf("emile@example.com");
    const insertSealed = (id: string, email: string, emailKey: string | null) => {
      sqlite.run(
        `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'x', 'user', ?4, 1, 1)`,
        [
          id,
          email,
          emailKey,
          credentialSeal.account({ id, email, emailKey, passwordHash: "x", role: "user" }),
        ],
      );
    };
    // Folded once by an earlier release; and stored before normalisation, as typed then.
    insertSealed("folded-once", "STRA\u1e9eE@example.com", "stra\u00dfe@example.com");
    insertSealed("typed-then", "Emile@EXAMPLE.com", null);
    // Both holders' roles written into the file.
    sqlite.run("UPDATE users SET role = 'admin' WHERE id IN (?, ?)", [strasse, emile]);
    const keys = () =>
      sqlite.query("SELECT id, email_key AS emailKey FROM users ORDER BY id").all() as {
        id: string;
        emailKey: string | null;
      }[];
    secondProcess(target).close();
    expect(keys()).toEqual(
      [
        { id: strasse, emailKey: "strasse@example.com" },
        { id: emile, emailKey: "emile@example.com" },
        { id: "folded-once", emailKey: "stra\u00dfe@example.com" },
        { id: "typed-then", emailKey: null },
      ].sort((a, b) => (a.id < b.id ? -1 : 1)),
    );
    // Undone, the holders match their seals again and keep their addresses.
    sqlite.run("UPDATE users SET role = 'user' WHERE id IN (?, ?)", [strasse, emile]);
    secondProcess(target).close();
    expect(target.services.auth.findUserByEmail("STRA\u1e9eE@example.com")?.id).toBe(strasse);
    expect(target.services.auth.findUserByEmail("emile@example.com")?.id).toBe(emile);
    // Left on its old key beside the account holding the address (92g F1: neither is moved).
    expect(keys().find((row) => row.id === "folded-once")?.emailKey).toBe(
      "stra\u00dfe@example.com",
    );
    // The set-aside account's address as users:list shows it (typed before normalisation) names
    // it, not the holder.
    const env = {
      DATABASE_PATH: target.databasePath,
      AUDIT_SECRET_KEY: target.config.audit.secretKey,
    };
    for (const spelling of ["Emile@EXAMPLE.com", "Emile@example.com."]) {
      const promoted = await cliInProcess(
        ["users:role", "--email", spelling, "--role", "admin"],
        env,
      );
      expect({ spelling, code: promoted.code }).toEqual({ spelling, code: 1 });
      expect(promoted.stderr).toContain("(typed-then), set aside at start");
    }
    expect(sqlite.query("SELECT role FROM users WHERE id = ?").get(emile)).toEqual({
      role: "user",
    });
  });

  test("an address whose account an earlier release folded once cannot be registered while the start leaves it unfolded (its row fails its seal, or a forged row holds its key), and is said at start (probe 92e F1, F2)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const { credentialSeal } = target.services;
    const insertSealed = (id: string, email: string, emailKey: string | null, seal?: string) => {
      sqlite.run(
        `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'x', 'user', ?4, 1, 1)`,
        [
          id,
          email,
          emailKey,
          seal ?? credentialSeal.account({ id, email, emailKey, passwordHash: "x", role: "user" }),
        ],
      );
    };
    // Folded once, its role then written into the file; and one whose folded key a forged row holds.
    insertSealed("tampered", "GRO\u1e9eE@example.com", "gro\u00dfe@example.com");
    sqlite.run("UPDATE users SET role = 'admin' WHERE id = 'tampered'");
    insertSealed("held", "KLA\u1e9eE@example.com", "kla\u00dfe@example.com");
    insertSealed("forged", "klasse@example.com", "klasse@example.com", "x");
    const next = startOn(target.databasePath, { AUDIT_SECRET_KEY: target.config.audit.secretKey });
    try {
      const said = next.logs.entries.find((entry) =>
        String(entry.msg).startsWith(
          "accounts whose address folds again (capital ẞ) are left as they are",
        ),
      ) as { level: string; users: string[] } | undefined;
      expect(said).toMatchObject({ level: "error", users: ["held"] });
      // Neither address can be taken meanwhile: undone, the file gives each its account back.
      for (const address of ["grosse@example.com", "GROSSE@example.com", "klasse@example.com"]) {
        const taken = await register(next, address);
        expect({ address, status: taken.status }).toEqual({ address, status: 409 });
      }
      expect(sqlite.query("SELECT count(*) AS n FROM users").get()).toEqual({ n: 3 });
    } finally {
      next.close();
    }
    sqlite.run("UPDATE users SET role = 'user' WHERE id = 'tampered'");
    sqlite.run("DELETE FROM users WHERE id = 'forged'");
    secondProcess(target).close();
    expect(target.services.auth.findUserByEmail("grosse@example.com")?.id).toBe("tampered");
    expect(target.services.auth.findUserByEmail("klasse@example.com")?.id).toBe("held");
    // A set-aside account whose stored address is the holder's own, normalised (`strasse@B.COM`
    // beside `strasse@b.com`): the address names both, and neither is guessed.
    expect((await register(target, "strasse@example.com")).status).toBe(201);
    insertSealed("beside", "strasse@EXAMPLE.COM", null);
    secondProcess(target).close();
    const env = {
      DATABASE_PATH: target.databasePath,
      AUDIT_SECRET_KEY: target.config.audit.secretKey,
    };
    const holder = target.services.auth.findUserByEmail("strasse@example.com")!.id;
    for (const args of [
      ["users:role", "--email", "strasse@EXAMPLE.COM", "--role", "admin"],
      ["users:erase", "--email", "strasse@example.com", "--yes"],
      ["keys:create", "--name", "k", "--scopes", "chat", "--owner", "strasse@example.com"],
    ]) {
      const refused = await cliInProcess(args, env);
      expect({ command: args[0], code: refused.code }).toEqual({ command: args[0], code: 1 });
      expect(refused.stderr).toContain("beside");
    }
    expect(target.services.auth.findUser(holder)?.role).toBe("user");
    expect(sqlite.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({ n: 0 });
  });

  test("an account registered while a folded-once account's key was hidden in the file keeps the address, and neither account is moved: both are named for an operator at every start (probes 92f F1, 92g F1)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const { credentialSeal } = target.services;
    // Older than any account registered now (ids are time-ordered), its key folded once, sealed.
    const id = "00000000-0000-7000-8000-000000000001";
    const email = "STRA\u1e9eE@example.com";
    const foldedOnce = "stra\u00dfe@example.com";
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
       VALUES (?1, ?2, ?3, 'x', 'user', ?4, 1, 1)`,
      [
        id,
        email,
        "hidden@example.com",
        credentialSeal.account({
          id,
          email,
          emailKey: foldedOnce,
          passwordHash: "x",
          role: "user",
        }),
      ],
    );
    // Its key written away: the address is free to register.
    expect((await register(target, "strasse@example.com")).status).toBe(201);
    const newer = target.services.auth.findUserByEmail("strasse@example.com")!.id;
    sqlite.run("UPDATE users SET email_key = ? WHERE id = ?", [foldedOnce, id]);
    const next = startOn(target.databasePath, { AUDIT_SECRET_KEY: target.config.audit.secretKey });
    try {
      // Which of the two is meant, the file cannot tell (by age, a row copied back from a backup
      // took the address: 92g F1): the start moves neither and says so, naming the one left.
      expect(next.services.auth.findUserByEmail("strasse@example.com")?.id).toBe(newer);
      expect(sqlite.query("SELECT email_key AS k FROM users WHERE id = ?").get(id)).toEqual({
        k: foldedOnce,
      });
      const said = next.logs.entries.find((entry) =>
        String(entry.msg).startsWith(
          "accounts whose address folds again (capital ẞ) onto another account's",
        ),
      ) as { level: string; users: string[] } | undefined;
      expect(said).toMatchObject({ level: "error", users: [id] });
    } finally {
      next.close();
    }
    // An operator reaches both by id, neither by the address.
    const env = {
      DATABASE_PATH: target.databasePath,
      AUDIT_SECRET_KEY: target.config.audit.secretKey,
    };
    const listed = await cliInProcess(["users:list"], env);
    expect(listed.stdout.split("\n").find((line) => line.startsWith(id))).toContain("set aside");
    expect(
      (await cliInProcess(["users:erase", "--email", "strasse@example.com", "--yes"], env)).code,
    ).toBe(1);
    // A key is given to either by its id only (the address is refused, naming both).
    const keyFor = (...owner: string[]) =>
      cliInProcess(["keys:create", "--name", "k", "--scopes", "chat", ...owner], env);
    const byAddress = await keyFor("--owner", "strasse@example.com");
    expect(byAddress.code).toBe(1);
    expect(byAddress.stderr).toContain(`${id}, set aside at start`);
    expect(byAddress.stderr).toContain("--owner-id");
    const byId = await keyFor("--owner-id", newer);
    expect(byId.code).toBe(0);
    expect(byId.stdout).toContain(`owner strasse@example.com (${newer})`);
    const both = await keyFor("--owner", "strasse@example.com", "--owner-id", newer);
    expect(both).toMatchObject({ code: 2, stdout: "" });
    const nobody = await keyFor("--owner-id", "00000000-0000-7000-8000-00000000dead");
    expect(nobody.code).toBe(1);
    expect(nobody.stderr).toContain("no account has the id");
    expect(
      sqlite.query("SELECT user_id AS owner FROM api_keys").all() as { owner: string }[],
    ).toEqual([{ owner: newer }]);
    expect((await cliInProcess(["users:erase", "--id", newer, "--yes"], env)).code).toBe(0);
    secondProcess(target).close();
    expect(target.services.auth.findUserByEmail("strasse@example.com")?.id).toBe(id);
  });

  /** A row as an earlier release stored it (its key folded once, for a ẞ), sealed as it stood. */
  function insertSealed(target: TestApp, id: string, email: string, key: string | null): void {
    target.db.$client.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
       VALUES (?1, ?2, ?3, 'x', 'user', ?4, 1, 1)`,
      [
        id,
        email,
        key,
        target.services.credentialSeal.account({
          id,
          email,
          emailKey: key,
          passwordHash: "x",
          role: "user",
        }),
      ],
    );
  }

  /**
   * The test app's credential seal, but another connection (another process, waiting for no lock)
   * runs `statement` when the seal is asked about the row `at`: a write while that row is read.
   */
  function sealWritingAt(target: TestApp, at: string, statement: string, ...values: string[]) {
    const other = new Database(target.databasePath);
    other.run("PRAGMA busy_timeout = 0");
    const { credentialSeal } = target.services;
    const seal: typeof credentialSeal = {
      ...credentialSeal,
      account: (row) => {
        if (row.id === at) other.run(statement, values);
        return credentialSeal.account(row);
      },
    };
    return { seal, close: () => other.close() };
  }

  function startAgain(target: TestApp) {
    return startOn(target.databasePath, { AUDIT_SECRET_KEY: target.config.audit.secretKey });
  }

  function namedAtStart(next: ReturnType<typeof startOn>, opening: string): string[] {
    const said = next.logs.entries.find((entry) => String(entry.msg).startsWith(opening)) as
      | { users: string[] }
      | undefined;
    return [...(said?.users ?? [])].sort();
  }

  test("the holder's key moved away in the file gives its address to no one: no key moves while an account row does not match its seal (probe 93a F1)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const older = "00000000-0000-7000-8000-00000000000a";
    insertSealed(target, older, "STRA\u1e9eE@example.com", "stra\u00dfe@example.com");
    // Beside it, as that release let be, the account holding `strasse`.
    const holder = "00000000-0000-7000-8000-00000000000b";
    insertSealed(target, holder, "strasse@example.com", "strasse@example.com");
    const first = startAgain(target);
    first.close();
    expect(sqlite.query("SELECT email_key AS k FROM users WHERE id = ?").get(older)).toEqual({
      k: "stra\u00dfe@example.com",
    });
    // The holder's key written away: no row holds the address now.
    sqlite.run("UPDATE users SET email_key = 'strasse@example.com.x' WHERE id = ?", [holder]);
    const next = startAgain(target);
    try {
      expect(next.services.auth.findUserByEmail("strasse@example.com")).toBeNull();
      expect(
        namedAtStart(next, "accounts whose address folds again (capital ẞ) are left as they are"),
      ).toEqual([older]);
      // And the row that keeps it waiting (probe 93c F2: only db:verify found it).
      const said = next.logs.entries.find((entry) =>
        String(entry.msg).startsWith("accounts whose address folds again (capital ẞ) are left"),
      ) as { rows?: string[] } | undefined;
      expect(said?.rows).toEqual([holder]);
    } finally {
      next.close();
    }
    expect(sqlite.query("SELECT email_key AS k FROM users WHERE id = ?").get(older)).toEqual({
      k: "stra\u00dfe@example.com",
    });
    // Put back, the holder has its address again, and the other is still left beside it.
    sqlite.run("UPDATE users SET email_key = 'strasse@example.com' WHERE id = ?", [holder]);
    const after = startAgain(target);
    try {
      expect(after.services.auth.findUserByEmail("STRA\u1e9eE@example.com")?.id).toBe(holder);
      expect(
        namedAtStart(
          after,
          "accounts whose address folds again (capital ẞ) onto another account's",
        ),
      ).toEqual([older]);
    } finally {
      after.close();
    }
  });

  test("a row stored before normalisation is not given its address while an account row does not match its seal: that row may be the holder, its key moved away (as probe 93a F1)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const typedThen = "00000000-0000-7000-8000-00000000000a";
    insertSealed(target, typedThen, "Emile@EXAMPLE.com", null);
    const holder = "00000000-0000-7000-8000-00000000000b";
    insertSealed(target, holder, "emile@example.com", "emile@example.com");
    // The holder's key moved away in the file: no row holds the address.
    sqlite.run("UPDATE users SET email_key = 'emile@example.com.x' WHERE id = ?", [holder]);
    const next = startAgain(target);
    try {
      expect(sqlite.query("SELECT email_key AS k FROM users WHERE id = ?").get(typedThen)).toEqual({
        k: null,
      });
      const said = next.logs.entries.find((entry) =>
        String(entry.msg).startsWith(
          "accounts stored before email normalisation are left unnormalised",
        ),
      ) as { level: string; users: string[]; rows: string[] } | undefined;
      expect(said).toMatchObject({ level: "error", users: [typedThen], rows: [holder] });
    } finally {
      next.close();
    }
    // Put back: the holder keeps its address, the other is set aside as before.
    sqlite.run("UPDATE users SET email_key = 'emile@example.com' WHERE id = ?", [holder]);
    const after = startAgain(target);
    try {
      expect(after.services.auth.findUserByEmail("EMILE@example.com")?.id).toBe(holder);
      expect(sqlite.query("SELECT email_key AS k FROM users WHERE id = ?").get(typedThen)).toEqual({
        k: null,
      });
    } finally {
      after.close();
    }
  });

  test("a holder whose key moves while the refold runs keeps its address: what the refold looked at first is held to (probe 93e F1)", () => {
    const target = app();
    const sqlite = target.db.$client;
    const left = "00000000-0000-7000-8000-00000000000a";
    const holder = "00000000-0000-7000-8000-00000000000b";
    const free = "00000000-0000-7000-8000-00000000000c";
    const bystander = "00000000-0000-7000-8000-00000000000d";
    insertSealed(target, left, "STRA\u1e9eE@example.com", "stra\u00dfe@example.com");
    insertSealed(target, holder, "strasse@example.com", "strasse@example.com");
    // One whose address no row holds: the refold reads every account for one failing its seal.
    insertSealed(target, free, "GRO\u1e9eE@example.com", "gro\u00dfe@example.com");
    insertSealed(target, bystander, "bystander@example.com", "bystander@example.com");
    // Another process moves the holder's key away while that read is under way.
    const moving = sealWritingAt(
      target,
      bystander,
      "UPDATE users SET email_key = 'strasse@example.com.x' WHERE id = ?",
      holder,
    );
    try {
      // Held when it looked: the address is not the left account's to take.
      const refolded = refoldEmailKeys(target.db, moving.seal);
      expect(refolded).toEqual({ collides: [left], heldByTampered: [], blockedBy: [] });
    } finally {
      moving.close();
    }
    const keyOf = (id: string) =>
      (sqlite.query("SELECT email_key AS k FROM users WHERE id = ?").get(id) as { k: string }).k;
    expect(keyOf(left)).toBe("stra\u00dfe@example.com");
    expect(keyOf(free)).toBe("grosse@example.com");
    // Put back, the holder has its address.
    sqlite.run("UPDATE users SET email_key = 'strasse@example.com' WHERE id = ?", [holder]);
    expect(target.services.auth.findUserByEmail("STRASSE@example.com")?.id).toBe(holder);
  });

  test("a row stored before normalisation whose address's holder moves its key while the start looks is not given it (probe 93e F1, the normalisation's side)", () => {
    const target = app();
    const sqlite = target.db.$client;
    const typedThen = "00000000-0000-7000-8000-00000000000a";
    const holder = "00000000-0000-7000-8000-00000000000b";
    const free = "00000000-0000-7000-8000-00000000000c";
    const bystander = "00000000-0000-7000-8000-00000000000d";
    insertSealed(target, typedThen, "Emile@EXAMPLE.com", null);
    insertSealed(target, holder, "emile@example.com", "emile@example.com");
    // One whose address no row holds: the start reads every account for one failing its seal.
    insertSealed(target, free, "Free@EXAMPLE.com", null);
    insertSealed(target, bystander, "bystander@example.com", "bystander@example.com");
    const moving = sealWritingAt(
      target,
      bystander,
      "UPDATE users SET email_key = 'emile@example.com.x' WHERE id = ?",
      holder,
    );
    // The auth service as a start builds it, with a seal that lets the other process write.
    const options = (target.services.auth as unknown as { options: object }).options;
    try {
      new AuthService({
        ...options,
        seal: moving.seal,
        prepareLogin: false,
      } as ConstructorParameters<typeof AuthService>[0]);
    } finally {
      moving.close();
    }
    const keyOf = (id: string) =>
      (
        sqlite.query("SELECT email_key AS k FROM users WHERE id = ?").get(id) as {
          k: string | null;
        }
      ).k;
    expect(keyOf(typedThen)).toBeNull();
    expect(keyOf(free)).toBe("free@example.com");
  });

  test("the rows are read for one that fails its seal, and with nothing to move the refold holds no write lock: another process writes at every step (probes 93c F1, 93g F3)", () => {
    const target = app();
    const sqlite = target.db.$client;
    const waiting = "00000000-0000-7000-8000-00000000000a";
    insertSealed(target, waiting, "GRO\u1e9eE@example.com", "gro\u00dfe@example.com");
    insertSealed(
      target,
      "00000000-0000-7000-8000-00000000000d",
      "bystander@example.com",
      "bystander@example.com",
    );
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
       VALUES ('forged', 'forged@example.com', 'forged@example.com', 'x', 'user', 'x', 1, 1)`,
    );
    const other = new Database(target.databasePath);
    other.run("PRAGMA busy_timeout = 0");
    let writes = 0;
    const { credentialSeal } = target.services;
    const writing: typeof credentialSeal = {
      ...credentialSeal,
      account: (row) => {
        other.run("UPDATE users SET updated_at = updated_at + 1 WHERE id = 'forged'");
        writes++;
        return credentialSeal.account(row);
      },
    };
    try {
      const refolded = refoldEmailKeys(target.db, writing);
      expect(refolded).toEqual({ collides: [], heldByTampered: [waiting], blockedBy: ["forged"] });
    } finally {
      other.close();
    }
    expect(writes).toBeGreaterThan(2);
  });

  test("a key folded once and a row stored before normalisation claiming one address: neither takes it, and no one may register it (probe 93g F2)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const folded = "00000000-0000-7000-8000-00000000000a";
    const unkeyed = "00000000-0000-7000-8000-00000000000b";
    insertSealed(target, folded, "STRA\u1e9eE@example.com", "stra\u00dfe@example.com");
    insertSealed(target, unkeyed, "Strasse@EXAMPLE.com", null);
    const next = startAgain(target);
    try {
      const keys = sqlite.query("SELECT id, email_key AS k FROM users ORDER BY id").all();
      expect(keys).toEqual([
        { id: folded, k: "stra\u00dfe@example.com" },
        { id: unkeyed, k: null },
      ]);
      expect(next.services.auth.findUserByEmail("strasse@example.com")).toBeNull();
    } finally {
      next.close();
    }
    expect((await register(target, "STRASSE@example.com")).status).toBe(409);
  });

  test("keys folded in parts pause between two, so that other processes write (probe 93h F2); a row another process folded meanwhile is done, not said to wait (93h F5)", () => {
    const target = app();
    const sqlite = target.db.$client;
    const { credentialSeal } = target.services;
    const ids: string[] = [];
    sqlite.transaction(() => {
      for (let i = 0; i < 600; i++) {
        const id = `00000000-0000-7000-8000-${String(i).padStart(12, "0")}`;
        ids.push(id);
        insertSealed(target, id, `GRO\u1e9eE${i}@example.com`, `gro\u00dfe${i}@example.com`);
      }
    })();
    // Another process folds the first while this one looks (its scan reads that row).
    const other = new Database(target.databasePath);
    const first = ids[0]!;
    let folded = false;
    const folding: typeof credentialSeal = {
      ...credentialSeal,
      account: (row) => {
        if (!folded && row.id === ids[599]) {
          folded = true;
          const emailKey = "grosse0@example.com";
          other.run("UPDATE users SET email_key = ?, seal = ? WHERE id = ?", [
            emailKey,
            credentialSeal.account({
              id: first,
              email: "GRO\u1e9eE0@example.com",
              emailKey,
              passwordHash: "x",
              role: "user",
            }),
            first,
          ]);
        }
        return credentialSeal.account(row);
      },
    };
    const pauses = spyOn(Bun, "sleepSync");
    try {
      const refolded = refoldEmailKeys(target.db, folding);
      expect(refolded).toEqual({ collides: [], heldByTampered: [], blockedBy: [] });
      // 600 rows are more than one part (500 rows at most, 20 ms: db/write-parts.ts), each
      // after the first paused for.
      expect(pauses.mock.calls.length).toBeGreaterThanOrEqual(1);
      expect(pauses.mock.calls.every(([ms]) => ms === PART_PAUSE_MS)).toBe(true);
    } finally {
      pauses.mockRestore();
      other.close();
    }
    expect(
      sqlite.query("SELECT count(*) AS n FROM users WHERE instr(email_key, '\u00df') > 0").get(),
    ).toEqual({ n: 0 });
  });

  test("two rows folded once to one address: neither takes it, whichever is older or fails its seal, and the address stays theirs against registration (probe 93a F2)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const first = "00000000-0000-7000-8000-00000000000a";
    const second = "00000000-0000-7000-8000-00000000000b";
    insertSealed(target, first, "\u1e9eSS@example.com", "\u00dfss@example.com");
    insertSealed(target, second, "SS\u1e9e@example.com", "ss\u00df@example.com");
    const stored = () =>
      sqlite.query("SELECT id, email_key AS k FROM users ORDER BY id").all() as unknown[];
    const asInserted = stored();
    for (const round of ["as sealed", "the older one's role written into the file"]) {
      if (round !== "as sealed") {
        sqlite.run("UPDATE users SET role = 'admin' WHERE id = ?", [first]);
      }
      const next = startAgain(target);
      try {
        expect({ round, keys: stored() }).toEqual({ round, keys: asInserted });
        expect(next.services.auth.findUserByEmail("ssss@example.com")).toBeNull();
      } finally {
        next.close();
      }
    }
    expect((await register(target, "SSSS@example.com")).status).toBe(409);
    // Its role put back, neither still: an operator decides.
    sqlite.run("UPDATE users SET role = 'user' WHERE id = ?", [first]);
    const last = startAgain(target);
    try {
      expect(stored()).toEqual(asInserted);
      expect(
        namedAtStart(last, "accounts whose address folds again (capital ẞ) onto another account's"),
      ).toEqual([first, second]);
    } finally {
      last.close();
    }
  });

  test("many keys to fold again are folded a part at a time, all of them; a start's warn line names ids cut short (probe 92a F4, F5)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    const { credentialSeal } = target.services;
    const insert = sqlite.query(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
       VALUES (?1, ?2, ?3, 'x', 'user', ?4, 1, 1)`,
    );
    sqlite.transaction(() => {
      for (let i = 0; i < 1_100; i++) {
        const id = `folded-once-${String(i).padStart(4, "0")}`;
        const email = `GRO\u1e9eE${i}@example.com`;
        const emailKey = `gro\u00dfe${i}@example.com`;
        const seal = credentialSeal.account({
          id,
          email,
          emailKey,
          passwordHash: "x",
          role: "user",
        });
        insert.run(id, email, emailKey, seal);
      }
      // Its address no valid one, its id a line long: set aside, named cut short. Sealed as it
      // stands: a row that does not match its seal would keep every key as it is (probe 93a F1).
      const long = "x".repeat(100_000);
      insert.run(
        long,
        "not an address",
        null,
        credentialSeal.account({
          id: long,
          email: "not an address",
          emailKey: null,
          passwordHash: "x",
          role: "user",
        }),
      );
    })();
    const next = startOn(target.databasePath, { AUDIT_SECRET_KEY: target.config.audit.secretKey });
    try {
      expect(
        sqlite.query("SELECT count(*) AS n FROM users WHERE instr(email_key, '\u00df') > 0").get(),
      ).toEqual({ n: 0 });
      expect(next.services.auth.findUserByEmail("grosse1099@example.com")?.id).toBe(
        "folded-once-1099",
      );
      const warned = next.logs.entries.find((entry) =>
        String(entry.msg).startsWith("accounts stored before email normalisation"),
      ) as { users: string[] } | undefined;
      expect(warned?.users.map((id) => id.length)).toEqual([64]);
    } finally {
      next.close();
    }
  });

  test("an address that is no text (a BLOB written into the file) is set aside, and the service starts (probe 79c F2)", async () => {
    const target = app();
    const sqlite = target.db.$client;
    sqlite.run(
      `INSERT INTO users (id, email, email_key, password_hash, role, seal, created_at, updated_at)
       VALUES ('blob-address', CAST('bob@example.com' AS BLOB), NULL, 'x', 'user', 'x', 1, 1)`,
    );
    const next = secondProcess(target);
    try {
      expect(
        sqlite.query("SELECT email_key AS emailKey FROM users WHERE id = 'blob-address'").get(),
      ).toEqual({ emailKey: null });
      expect((await send(next, "/health")).status).toBe(200);
      expect(next.services.auth.findUserByEmail("bob@example.com")).toBeNull();
    } finally {
      next.close();
    }
  });
});

describe("the CLI finds accounts by the same normalisation", () => {
  test("users:create refuses a look-alike; users:role finds the account by any spelling", async () => {
    const target = app();
    const env = { DATABASE_PATH: target.databasePath };
    const cli = (args: string[]) => runToExit(["bun", "run", "src/cli/index.ts", ...args], env);
    expect((await cli(["users:create", "--email", "\u00e9mile@example.com"])).code).toBe(0);
    const twin = await cli(["users:create", "--email", "E\u0301MILE@ＥＸＡＭＰＬＥ.com."]);
    expect(twin.code).toBe(1);
    expect(twin.stderr.trim()).toBe(
      "palisade users:create: an account with this email already exists",
    );
    const invisible = await cli(["users:create", "--email", "\u00e9mile\u200b@example.com"]);
    expect(invisible.code).toBe(2);
    expect(invisible.stderr).not.toContain("example.com");
    const promoted = await cli([
      "users:role",
      "--email",
      "E\u0301mile@Example.com.",
      "--role",
      "admin",
    ]);
    expect(promoted.code).toBe(0);
    const rows = target.db.$client.query("SELECT email, role FROM users").all();
    expect(rows).toEqual([{ email: "\u00e9mile@example.com", role: "admin" }]);
  }, 30_000);
});

test("an address near the 254 bound reaches its account in a longer spelling: decomposed, or with spaces around it (probe 38a F4)", async () => {
  const target = app();
  const domain = `${"d".repeat(60)}.${"e".repeat(60)}.${"f".repeat(60)}.test`;
  const composed = `${"é".repeat(60)}q@${domain}`;
  expect(composed.length).toBe(249);
  const registered = await send(target, "/api/auth/register", {
    body: { email: composed, password: STRONG_PASSWORD },
    peer: nextPeer(),
  });
  expect(registered.status).toBe(201);
  const decomposed = composed.normalize("NFD");
  expect(decomposed.length).toBeGreaterThan(254);
  for (const spelling of [decomposed, `    ${composed}    `]) {
    const login = await send(target, "/api/auth/login", {
      body: { email: spelling, password: STRONG_PASSWORD },
      peer: nextPeer(),
    });
    expect({ length: spelling.length, status: login.status }).toEqual({
      length: spelling.length,
      status: 200,
    });
  }
  const again = await send(target, "/api/auth/register", {
    body: { email: decomposed, password: STRONG_PASSWORD },
    peer: nextPeer(),
  });
  expect(again.status).toBe(409);
  // Past 254 once normalised it is no address: 422 naming the field, as before.
  const tooLong = await send(target, "/api/auth/register", {
    body: { email: `${"é".repeat(60)}qq${"q".repeat(5)}@${domain}`, password: STRONG_PASSWORD },
    peer: nextPeer(),
  });
  expect(tooLong.status).toBe(422);
});
