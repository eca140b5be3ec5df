import { afterEach, describe, expect, test } from "bun:test";
import { Elysia } from "elysia";
import { parseTrustProxy } from "../../src/config/parse";
import {
  clientIp,
  createClientResolver,
  MEMO_MAX_FORWARDED_LENGTH,
} from "../../src/plugins/client-ip";
import {
  compileTrust,
  MAX_TRUSTED_PROXIES,
  parseForwardedEntry,
  resolveClientIp,
  UNKNOWN_CLIENT,
} from "../../src/plugins/client-ip/resolve";
import { buildTestApp, fromPeer, type TestApp } from "../support/app";

const trust = (raw?: string) => compileTrust(parseTrustProxy("TRUST_PROXY", raw));
const resolve = (peer: string | null, forwardedFor: string | null, raw?: string) =>
  resolveClientIp({ peer, forwardedFor }, trust(raw));

describe("without trusted proxies", () => {
  test("the socket peer is the client and X-Forwarded-For is ignored", () => {
    expect(resolve("198.51.100.7", null)).toBe("198.51.100.7");
    expect(resolve("198.51.100.7", "1.2.3.4")).toBe("198.51.100.7");
    expect(resolve("198.51.100.7", "1.2.3.4, 5.6.7.8")).toBe("198.51.100.7");
  });

  test("IPv4-mapped IPv6 folds to IPv4 and IPv6 is written compactly", () => {
    expect(resolve("::ffff:10.1.2.3", null)).toBe("10.1.2.3");
    expect(resolve("2001:0db8:0000:0000:0000:0000:0000:0001", null)).toBe("2001:db8::1");
  });

  test("an unknown peer is 'unknown', never a header's value", () => {
    expect(resolve(null, "1.2.3.4")).toBe(UNKNOWN_CLIENT);
    expect(resolve("garbage", "1.2.3.4")).toBe(UNKNOWN_CLIENT);
  });
});

describe("trusting a number of hops", () => {
  test("one hop: the entry the proxy appended", () => {
    expect(resolve("10.0.0.1", "203.0.113.5", "1")).toBe("203.0.113.5");
  });

  test("a client cannot choose its address by prepending entries", () => {
    // The client sent "X-Forwarded-For: 6.6.6.6"; the one trusted proxy appended the real address.
    expect(resolve("10.0.0.1", "6.6.6.6, 203.0.113.5", "1")).toBe("203.0.113.5");
  });

  test("two hops walk two entries from the right", () => {
    expect(resolve("10.0.0.1", "6.6.6.6, 203.0.113.5, 10.0.0.2", "2")).toBe("203.0.113.5");
  });

  test("more hops than entries stop at the leftmost", () => {
    expect(resolve("10.0.0.1", "203.0.113.5", "3")).toBe("203.0.113.5");
  });

  test("a malformed entry stops the walk at the proxy that wrote it", () => {
    expect(resolve("10.0.0.1", "203.0.113.5, not-an-ip", "2")).toBe("10.0.0.1");
  });

  test("ports and brackets written by proxies are understood", () => {
    expect(resolve("10.0.0.1", "203.0.113.5:51234", "1")).toBe("203.0.113.5");
    expect(resolve("10.0.0.1", "[2001:db8::7]:443", "1")).toBe("2001:db8::7");
    expect(resolve("10.0.0.1", "::ffff:192.0.2.1", "1")).toBe("192.0.2.1");
  });
});

describe("trusting CIDRs", () => {
  test("trusted proxies are skipped from the right until an untrusted address", () => {
    expect(resolve("10.0.0.1", "6.6.6.6, 203.0.113.5, 10.0.0.9", "10.0.0.0/8")).toBe("203.0.113.5");
  });

  test("a peer outside the trusted ranges is the client, whatever it sends", () => {
    expect(resolve("198.51.100.7", "1.2.3.4", "10.0.0.0/8")).toBe("198.51.100.7");
  });

  test("all-trusted chains end at the leftmost entry", () => {
    expect(resolve("10.0.0.1", "10.0.0.5", "10.0.0.0/8")).toBe("10.0.0.5");
  });

  test("IPv4-mapped peers match IPv4 ranges, and mapped ranges match IPv4 peers", () => {
    expect(resolve("::ffff:10.0.0.1", "203.0.113.5", "10.0.0.0/8")).toBe("203.0.113.5");
    expect(resolve("10.0.0.1", "203.0.113.5", "::ffff:10.0.0.0/104")).toBe("203.0.113.5");
  });

  test("a chain walks at most MAX_TRUSTED_PROXIES trusted entries: past them, the last one reached is the client (probe 88c F1: 2,000 trusted entries cost 10–15 ms a request, /health included)", () => {
    const trusted = (count: number) =>
      Array.from({ length: count }, (_, i) => `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}`);
    // Within the cap: walked to the untrusted entry on its left, as before.
    const within = ["203.0.113.5", ...trusted(MAX_TRUSTED_PROXIES - 1)].join(", ");
    expect(resolve("10.255.0.1", within, "10.0.0.0/8")).toBe("203.0.113.5");
    // Past it: the walk stops at the cap, on a trusted entry; the leftmost is never read.
    const entries = trusted(2000);
    const past = ["203.0.113.5", ...entries].join(", ");
    expect(resolve("10.255.0.1", past, "10.0.0.0/8")).toBe(
      entries[entries.length - MAX_TRUSTED_PROXIES]!,
    );
    expect(resolve("10.255.0.1", ["garbage", ...entries].join(", "), "10.0.0.0/8")).toBe(
      entries[entries.length - MAX_TRUSTED_PROXIES]!,
    );
  });

  test("IPv6 ranges and the loopback name", () => {
    expect(resolve("fd00::1", "2001:db8::5", "fc00::/7")).toBe("2001:db8::5");
    expect(resolve("::1", "203.0.113.5", "loopback")).toBe("203.0.113.5");
  });
});

test("parseForwardedEntry refuses what is not an address", () => {
  expect(parseForwardedEntry("")).toBeNull();
  expect(parseForwardedEntry("1.2.3")).toBeNull(); // inet_aton's short form: not canonical
  expect(parseForwardedEntry("example.com")).toBeNull();
  expect(parseForwardedEntry("1.2.3.4.5")).toBeNull();
  expect(parseForwardedEntry("fe80::1%eth0")).toBeNull();
  // Brackets belong to IPv6; ports run 1–65535.
  expect(parseForwardedEntry("[1.2.3.4]")).toBeNull();
  expect(parseForwardedEntry("[1.2.3.4]:80")).toBeNull();
  expect(parseForwardedEntry("1.2.3.4:99999")).toBeNull();
  expect(parseForwardedEntry("1.2.3.4:65536")).toBeNull();
  expect(parseForwardedEntry("1.2.3.4:0")).toBeNull();
  expect(parseForwardedEntry("[2001:db8::1]:70000")).toBeNull();
  expect(parseForwardedEntry("1.2.3.4:65535")?.toString()).toBe("1.2.3.4");
  expect(parseForwardedEntry("[2001:db8::1]:8080")?.toString()).toBe("2001:db8::1");
  expect(parseForwardedEntry(" 203.0.113.5\t")?.toString()).toBe("203.0.113.5");
});

describe("in the app", () => {
  let current: TestApp | null = null;
  afterEach(() => {
    current?.close();
    current = null;
  });

  const appReportingIp = (env: Record<string, string>) => {
    current = buildTestApp({ env });
    return current.app.get("/test/ip", ({ clientIp }) => ({ ip: clientIp }));
  };
  const ipFor = async (app: ReturnType<typeof appReportingIp>, peer: string, xff?: string) => {
    const request = new Request("http://localhost/test/ip", {
      headers: xff ? { "x-forwarded-for": xff } : {},
    });
    const response = await app.handle(fromPeer(request, peer));
    return ((await response.json()) as { ip: string }).ip;
  };

  test("spoofed X-Forwarded-For from an untrusted peer is ignored", async () => {
    const app = appReportingIp({});
    expect(await ipFor(app, "198.51.100.7", "127.0.0.1")).toBe("198.51.100.7");
  });

  test("behind a trusted proxy the forwarded address is used", async () => {
    const app = appReportingIp({ TRUST_PROXY: "10.0.0.0/8" });
    expect(await ipFor(app, "10.1.1.1", "203.0.113.80")).toBe("203.0.113.80");
    expect(await ipFor(app, "198.51.100.7", "203.0.113.80")).toBe("198.51.100.7");
  });

  test("uses the real socket address when served", async () => {
    let listening: Bun.Server<unknown> | null = null;
    const app = new Elysia()
      .use(clientIp({ trustProxy: { kind: "none" }, listener: () => listening }))
      .get("/ip", ({ clientIp }) => clientIp)
      .listen({ hostname: "127.0.0.1", port: 0 });
    listening = app.server;
    try {
      const response = await fetch(new URL("/ip", app.server!.url), {
        headers: { "x-forwarded-for": "6.6.6.6" },
      });
      expect(await response.text()).toBe("127.0.0.1");
    } finally {
      await app.stop(true);
    }
  });
});

describe("remembered resolutions", () => {
  const loopback = parseTrustProxy("TRUST_PROXY", "loopback");

  test("a long X-Forwarded-For is resolved every time, never remembered, however many arrive", () => {
    const resolver = createClientResolver(loopback);
    const filler = "10.0.0.1, ".repeat(1400); // ~14 KB, as a client may send through a proxy
    for (let i = 0; i < 2_000; i++) {
      const client = `203.0.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      const header = `${filler}${client}`;
      expect(header.length).toBeGreaterThan(MEMO_MAX_FORWARDED_LENGTH);
      expect(resolver.resolve("127.0.0.1", header).ip).toBe(client);
    }
    expect(resolver.remembered).toBe(0);
  });

  test("short ones are remembered per (peer, header), each its own answer, and bounded", () => {
    const resolver = createClientResolver(loopback);
    expect(resolver.resolve("127.0.0.1", "198.51.100.7").ip).toBe("198.51.100.7");
    // The same header from an untrusted peer is that peer, not the remembered answer.
    expect(resolver.resolve("192.0.2.9", "198.51.100.7").ip).toBe("192.0.2.9");
    expect(resolver.resolve("127.0.0.1", "198.51.100.7").ip).toBe("198.51.100.7");
    expect(resolver.remembered).toBe(2);
    for (let i = 0; i < 25_000; i++) resolver.resolve("127.0.0.1", `198.51.${i >> 8}.${i & 255}`);
    expect(resolver.remembered).toBeLessThanOrEqual(10_000);
  });
});

describe("more hops than proxies (probe 30d F3)", () => {
  let current: TestApp | null = null;
  afterEach(() => {
    current?.close();
    current = null;
  });

  test("a request with fewer X-Forwarded-For entries than TRUST_PROXY's hops is said once, a direct one with none is not", async () => {
    current = buildTestApp({ env: { TRUST_PROXY: "2" } });
    const target = current;
    const get = (forwardedFor?: string) =>
      target.app.handle(
        fromPeer(
          new Request("http://localhost/health", {
            headers: forwardedFor === undefined ? {} : { "x-forwarded-for": forwardedFor },
          }),
          "10.0.0.2",
        ),
      );
    const warned = () =>
      target.logs.entries.filter((entry) => String(entry.msg).startsWith("TRUST_PROXY trusts"));
    await get();
    await get("198.51.100.7, 10.0.0.1");
    expect(warned()).toEqual([]);
    // One proxy in front where two are trusted: each browser's request carries one entry.
    await get("198.51.100.7");
    await get("198.51.100.8");
    await get("198.51.100.9");
    // The same request again, remembered: still told, and counted.
    for (let i = 0; i < 5; i++) await get("198.51.100.7");
    expect(warned()).toHaveLength(1);
    target.logger.flush();
    expect(
      target.logs.entries.find((entry) => entry.repeated === "trust proxy short chain"),
    ).toMatchObject({ count: 7 });
    expect(warned()[0]).toMatchObject({
      level: "warn",
      hops: 2,
      entries: 1,
      msg: "TRUST_PROXY trusts 2 proxy hops, but a request came through 1: with more hops than proxies, a client that sends its own X-Forwarded-For chooses its address; set TRUST_PROXY to the number of proxies in front of the service, or their CIDRs",
    });
  });

  test("CIDRs and a hop count the chain covers say nothing", () => {
    const told: unknown[] = [];
    const byCidrs = createClientResolver(parseTrustProxy("TRUST_PROXY", "loopback"), (chain) =>
      told.push(chain),
    );
    byCidrs.resolve("127.0.0.1", "198.51.100.7");
    const byHops = createClientResolver(parseTrustProxy("TRUST_PROXY", "1"), (chain) =>
      told.push(chain),
    );
    byHops.resolve("10.0.0.2", "198.51.100.7");
    byHops.resolve("10.0.0.2", null);
    expect(told).toEqual([]);
    const three = createClientResolver(parseTrustProxy("TRUST_PROXY", "3"), (chain) =>
      told.push(chain),
    );
    three.resolve("10.0.0.2", "198.51.100.7, 10.0.0.1");
    expect(told).toEqual([{ hops: 3, entries: 2 }]);
  });
});
