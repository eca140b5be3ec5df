/**
 * The request guard's fast paths: the Host verdict remembered per exact Host value, and the
 * one-pass header scan. Neither may ever answer for another input than its own.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { checkHeaders, headerRefusal } from "../../src/plugins/request-guard/checks";
import { checkHost, createHostCheck, HOST_CACHE_LIMIT } from "../../src/plugins/request-guard/host";
import { buildTestApp, PRODUCTION_ENV, send, type TestApp } from "../support/app";

const withHost = (host: string) => new Request("http://placeholder/health", { headers: { host } });

const HOSTS = [
  "api.example.test",
  "API.Example.Test",
  "api.example.test:8443",
  "evil.test",
  "api.example.test.evil.test",
  "010.1.1.1",
  "[2001:DB8::1]",
  "[2001:db8::1]:443",
  "[2001:db8::2]",
  "host name",
  "",
  "a..b",
];

describe("the Host verdict cache", () => {
  test.each([
    ["no list", null],
    ["ALLOWED_HOSTS", new Set(["api.example.test", "[2001:db8::1]"])],
  ])("with %s, every Host value gets its own verdict, asked in any order", (_label, allowed) => {
    const cached = createHostCheck(allowed);
    const expected = HOSTS.map((host) => checkHost(withHost(host), allowed));
    // Some are refused and some pass, so a verdict served for the wrong value would show.
    expect(expected.filter((verdict) => verdict === null).length).toBeGreaterThan(0);
    expect(expected.filter((verdict) => verdict !== null).length).toBeGreaterThan(0);
    for (let round = 0; round < 3; round++) {
      const order = round === 1 ? [...HOSTS.keys()].reverse() : [...HOSTS.keys()];
      for (const index of order) {
        expect(cached(withHost(HOSTS[index]!))).toEqual(expected[index]!);
      }
    }
  });

  test("a request without a Host header is judged by its URL's authority", () => {
    const cached = createHostCheck(new Set(["api.example.test"]));
    expect(cached(new Request("http://api.example.test/health"))).toBeNull();
    expect(cached(new Request("http://evil.test/health"))?.code).toBe("BAD_HEADER");
  });

  test("a flood of distinct Host values keeps it bounded, and answers stay right after", () => {
    const allowed = new Set(["api.example.test"]);
    const cached = createHostCheck(allowed, 100);
    expect(cached(withHost("api.example.test"))).toBeNull();
    for (let i = 0; i < 10_000; i++) {
      expect(cached(withHost(`h${i}.evil.test`))?.code).toBe("BAD_HEADER");
      expect(cached.size).toBeLessThanOrEqual(100);
    }
    expect(cached(withHost("api.example.test"))).toBeNull();
    expect(cached(withHost("h5.evil.test"))?.code).toBe("BAD_HEADER");
    expect(createHostCheck(null).size).toBe(0);
    expect(HOST_CACHE_LIMIT).toBeGreaterThan(0);
  });
});

describe("through the app, with ALLOWED_HOSTS", () => {
  let current: TestApp | null = null;
  afterEach(() => {
    current?.close();
    current = null;
  });

  test("a listed host, then an unlisted one, then the listed one again: each its own answer", async () => {
    current = buildTestApp({ env: { ...PRODUCTION_ENV, ALLOWED_HOSTS: "api.example.test" } });
    const get = (host: string) => send(current!, "/health", { headers: { host } });
    for (let round = 0; round < 2; round++) {
      expect((await get("api.example.test")).status).toBe(200);
      const unlisted = await get("api.example.test.evil.test");
      expect(unlisted.status).toBe(400);
      expect(((await unlisted.json()) as { code: string }).code).toBe("BAD_HEADER");
      expect((await get("API.EXAMPLE.TEST:443")).status).toBe(200);
      expect((await get("api.example.test:0")).status).toBe(400);
    }
  });
});

describe("the header scan", () => {
  const cases: [string, [string, string][]][] = [
    [
      "ordinary headers",
      [
        ["accept", "*/*"],
        ["user-agent", "curl/8"],
        ["authorization", "Bearer x"],
      ],
    ],
    ["a tab inside a value", [["user-agent", "a\tb"]]],
    [
      "a comma in a list header",
      [
        ["accept", "a/b, c/d"],
        ["accept-encoding", "gzip, br"],
      ],
    ],
    [
      "a control character",
      [
        ["accept", "*/*"],
        ["x-note", "a\u0001b"],
      ],
    ],
    ["DEL", [["x-note", "a\u007fb"]]],
    [
      "control characters in two headers",
      [
        ["x-b", "\u0002"],
        ["x-a", "\u0001"],
      ],
    ],
    [
      "a repeated authorization",
      [
        ["authorization", "a"],
        ["authorization", "b"],
      ],
    ],
    ["a comma in host", [["host", "a,b"]]],
    [
      "a repeat and a control character",
      [
        ["origin", "a, b"],
        ["x-z", "\u001f"],
      ],
    ],
    [
      "two repeated single-valued headers",
      [
        ["x-api-key", "a"],
        ["x-api-key", "b"],
        ["content-type", "a,b"],
      ],
    ],
    [
      "set-cookie sent twice",
      [
        ["set-cookie", "a=1"],
        ["set-cookie", "b=2"],
      ],
    ],
    [
      "a control character in a second set-cookie",
      [
        ["set-cookie", "a=1"],
        ["set-cookie", "b\u0003"],
      ],
    ],
  ];

  test.each(cases)("%s: the same answer as the full check", (_label, entries) => {
    const headers = new Headers();
    for (const [name, value] of entries) headers.append(name, value);
    expect(checkHeaders(headers)).toEqual(headerRefusal(headers));
  });

  test("the scan refuses what it must", () => {
    const refused = (entries: [string, string][]) => {
      const headers = new Headers();
      for (const [name, value] of entries) headers.append(name, value);
      return checkHeaders(headers)?.code ?? null;
    };
    expect(refused([["x-note", "a\u0001b"]])).toBe("BAD_HEADER");
    expect(
      refused([
        ["authorization", "a"],
        ["authorization", "b"],
      ]),
    ).toBe("DUPLICATE_HEADER");
    expect(
      refused([
        ["set-cookie", "a=1"],
        ["set-cookie", "b\u0003"],
      ]),
    ).toBe("BAD_HEADER");
    expect(
      refused([
        ["accept", "a/b, c/d"],
        ["user-agent", "a\tb"],
      ]),
    ).toBeNull();
  });
});
