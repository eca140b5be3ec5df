/**
 * An IPv6 site (/48) is blocked once enough distinct /64s of it are (probe 89d F3): a client
 * holding a /48 rotated through its 65,536 /64s, earning a block and an audit row for each. The
 * tests set the threshold to 4 (IP_BLOCK_IPV6_SITE_BLOCKS; 16 by default) unless they say.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../support/app";
import { bearer, signUp } from "../support/auth";
import { cliInProcess } from "../support/cli";
import { ManualClock } from "../support/clock";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const MINUTE = 60_000;

/** One request a minute: an address's sixth request is its fifth refusal, which blocks it. */
function blockingApp(env: Record<string, string> = {}, clock = new ManualClock()) {
  current = buildTestApp({
    env: {
      RATE_LIMIT_PER_MINUTE: "1",
      RATE_LIMIT_BURST: "100",
      IP_BLOCK_IPV6_SITE_BLOCKS: "4",
      ...env,
    },
    clock,
  });
  return current;
}

/** Sends from `peer` until it is refused as blocked; the statuses seen. */
async function untilBlocked(target: TestApp, peer: string) {
  const statuses: number[] = [];
  while (statuses.at(-1) !== 403 && statuses.length < 20) {
    statuses.push((await send(target, "/openapi.json", { peer })).status);
  }
  return statuses;
}

function blockRows(target: TestApp) {
  return target.db.$client
    .query(
      "SELECT address, reason, expires_at - created_at AS ttl FROM ip_blocks ORDER BY created_at, address LIKE '%/48', address",
    )
    .all() as { address: string; reason: string; ttl: number }[];
}

function blockedAudits(target: TestApp) {
  target.services.audit.flush();
  return target.db.$client
    .query("SELECT ip FROM audit_events WHERE type = 'ip.blocked' ORDER BY at, ip LIKE '%/48', ip")
    .all()
    .map((row) => (row as { ip: string }).ip);
}

describe("an IPv6 /48 whose /64s are blocked", () => {
  test("the fourth /64 blocked within an hour blocks the whole /48: its other /64s are refused at once, and a flood through them writes no more rows", async () => {
    const target = blockingApp();
    for (const n of [1, 2, 3]) {
      expect(await untilBlocked(target, `2001:db8:5:${n}::1`)).toEqual([
        200, 429, 429, 429, 429, 429, 403,
      ]);
    }
    // Three blocked: the site's next /64 is served.
    expect((await send(target, "/openapi.json", { peer: "2001:db8:5:99::1" })).status).toBe(200);
    expect(await untilBlocked(target, "2001:db8:5:4::1")).toEqual([
      200, 429, 429, 429, 429, 429, 403,
    ]);
    const site = await send(target, "/openapi.json", { peer: "2001:db8:5:abcd::7" });
    expect(site.status).toBe(403);
    expect(((await site.json()) as { code: string }).code).toBe("IP_BLOCKED");
    expect(Number(site.headers.get("retry-after"))).toBe(15 * 60);
    expect(blockRows(target).at(-1)).toEqual({
      address: "2001:db8:5::/48",
      reason: "4 of its /64s blocked automatically in 60 min",
      ttl: 15 * MINUTE,
    });
    // A flood through the site's other /64s: refused, and nothing more written.
    for (let n = 0x100; n < 0x140; n++) {
      expect(
        (await send(target, "/openapi.json", { peer: `2001:db8:5:${n.toString(16)}::1` })).status,
      ).toBe(403);
    }
    expect(blockRows(target).map((row) => row.address)).toEqual([
      "2001:db8:5:1::/64",
      "2001:db8:5:2::/64",
      "2001:db8:5:3::/64",
      "2001:db8:5:4::/64",
      "2001:db8:5::/48",
    ]);
    expect(blockedAudits(target)).toEqual(blockRows(target).map((row) => row.address));
    // The /48's neighbours, IPv4 clients and the probes are not touched.
    expect((await send(target, "/openapi.json", { peer: "2001:db8:6::1" })).status).toBe(200);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:4:ffff::1" })).status).toBe(200);
    expect((await send(target, "/openapi.json", { peer: "203.0.113.9" })).status).toBe(200);
    expect((await send(target, "/health", { peer: "2001:db8:5:abcd::7" })).status).toBe(200);
    const metrics = await (await send(target, "/metrics", { peer: "127.0.0.1" })).text();
    expect(metrics).toContain("ip_blocks_active 5");
  });

  test("/64s at /48 spellings that are not the first: a site whose fourth group is zero, and one with zero groups inside, are one /48 each", async () => {
    const target = blockingApp();
    // 2001:0:0:N::/64 are /64s of 2001::/48, as 2001::/64 itself is.
    for (const peer of ["2001::1", "2001:0:0:1::1", "2001:0:0:2::1", "2001:0:0:ffff::1"]) {
      expect((await untilBlocked(target, peer)).at(-1)).toBe(403);
    }
    expect(blockRows(target).at(-1)?.address).toBe("2001::/48");
    expect((await send(target, "/openapi.json", { peer: "2001:0:0:1234:5::1" })).status).toBe(403);
    // A neighbour /48 differing in the third group alone is its own.
    expect((await send(target, "/openapi.json", { peer: "2001:0:1::1" })).status).toBe(200);
  });

  test("blocks of a /48's /64s more than an hour apart, or in several /48s, block no /48", async () => {
    const clock = new ManualClock();
    const target = blockingApp({}, clock);
    for (const n of [1, 2, 3]) await untilBlocked(target, `2001:db8:7:${n}::1`);
    clock.advance(61 * MINUTE);
    await untilBlocked(target, "2001:db8:7:4::1");
    // One /64 from each of four /48s of one /32.
    for (const n of [1, 2, 3, 4]) await untilBlocked(target, `2001:db8:${100 + n}::1`);
    expect(blockRows(target).filter((row) => row.address.endsWith("/48"))).toEqual([]);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:7:99::1" })).status).toBe(200);
  });

  test("refusals at once from eight of its /64s make one /48 block", async () => {
    const target = blockingApp();
    const peers = Array.from({ length: 8 }, (_, n) => `2001:db8:8:${n + 1}::1`);
    await Promise.all(peers.map((peer) => untilBlocked(target, peer)));
    const sites = blockRows(target).filter((row) => row.address.endsWith("/48"));
    expect(sites.map((row) => row.address)).toEqual(["2001:db8:8::/48"]);
    expect(blockedAudits(target).filter((ip) => ip.endsWith("/48"))).toEqual(["2001:db8:8::/48"]);
  });

  test("a /48 blocked again within the week is blocked an hour, and never longer; lifting it starts its count again", async () => {
    const clock = new ManualClock();
    const target = blockingApp({}, clock);
    const blockSite = async (from: number) => {
      for (let n = from; n < from + 4; n++) await untilBlocked(target, `2001:db8:9:${n}::1`);
    };
    await blockSite(1);
    expect(blockRows(target).at(-1)).toMatchObject({
      address: "2001:db8:9::/48",
      ttl: 15 * MINUTE,
    });
    clock.advance(61 * MINUTE);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:9:99::1" })).status).toBe(200);
    await blockSite(0x11);
    expect(blockRows(target).at(-1)).toMatchObject({
      address: "2001:db8:9::/48",
      ttl: 60 * MINUTE,
    });
    clock.advance(61 * MINUTE);
    await blockSite(0x21);
    expect(blockRows(target).at(-1)).toMatchObject({
      address: "2001:db8:9::/48",
      ttl: 60 * MINUTE,
    });

    // Lifted by an admin: the site's next /64 block is its first again, not its fifth.
    const siteBlock = target.services.ipBlocks
      .listActive()
      .find((block) => block.address === "2001:db8:9::/48")!;
    expect(await target.services.ipBlocks.lift(siteBlock.address, "user:admin")).toBe(1);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:9:77::1" })).status).toBe(200);
    await untilBlocked(target, "2001:db8:9:31::1");
    expect((await send(target, "/openapi.json", { peer: "2001:db8:9:78::1" })).status).toBe(200);
  });

  test("one /64 blocked again, or blocks an admin lifted, count once or not at all (probe 90a F1, F4)", async () => {
    const clock = new ManualClock();
    const target = blockingApp({}, clock);
    // Blocked, waited out, blocked again, four times over: one /64.
    for (let round = 0; round < 4; round++) {
      await untilBlocked(target, "2001:db8:3:1::1");
      clock.advance(61 * MINUTE);
    }
    // Two more, blocked twice each within the hour: three /64s in all.
    for (const n of [2, 3]) {
      await untilBlocked(target, `2001:db8:3:${n}::1`);
      clock.advance(16 * MINUTE);
      await untilBlocked(target, `2001:db8:3:${n}::1`);
    }
    expect(blockRows(target).filter((row) => row.address.endsWith("/48"))).toEqual([]);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:3:beef::1" })).status).toBe(200);
    // Lifted by an admin, a /64's blocks are no offence of the /48's.
    for (const block of target.services.ipBlocks.listActive()) {
      await target.services.ipBlocks.lift(block.address, "user:admin");
    }
    await untilBlocked(target, "2001:db8:3:4::1");
    expect(blockRows(target).filter((row) => row.address.endsWith("/48"))).toEqual([]);
    // A fourth distinct /64 with a block no one lifted, within the hour: the /48.
    for (const n of [5, 6, 7]) await untilBlocked(target, `2001:db8:3:${n}::1`);
    expect(blockRows(target).filter((row) => row.address.endsWith("/48"))).toHaveLength(1);
  });

  test("Retry-After is the later end: a /64 blocked for a day inside a /48 blocked for 15 minutes, and the refusal that blocks the /48 for longer than its /64 (probe 90a F2, F3)", async () => {
    const clock = new ManualClock();
    const target = blockingApp({}, clock);
    target.services.ipBlocks.block({
      address: "2001:db8:2:9::/64",
      reason: "abuse",
      ttlMs: 24 * 60 * MINUTE,
      source: "admin",
    });
    for (const n of [1, 2, 3, 4]) await untilBlocked(target, `2001:db8:2:${n}::1`);
    const inBoth = await send(target, "/openapi.json", { peer: "2001:db8:2:9::1" });
    expect(inBoth.status).toBe(403);
    expect(Number(inBoth.headers.get("retry-after"))).toBe(24 * 60 * 60);
    // The /48's second block is an hour, its /64s' first 15 minutes: the refusal that makes it
    // says an hour.
    clock.advance(16 * MINUTE);
    for (const n of [5, 6, 7]) await untilBlocked(target, `2001:db8:2:${n}::1`);
    const statuses: Response[] = [];
    for (let i = 0; i < 6; i++)
      statuses.push(await send(target, "/openapi.json", { peer: "2001:db8:2:8::1" }));
    const last = statuses.at(-1)!;
    expect(last.status).toBe(429);
    expect(Number(last.headers.get("retry-after"))).toBe(60 * 60);
    const sibling = await send(target, "/openapi.json", { peer: "2001:db8:2:77::1" });
    expect(Number(sibling.headers.get("retry-after"))).toBe(60 * 60);
  });

  test("the /48s that are no one's site (::/16, the translation prefixes') are never blocked whole: their /64s one by one (probe 90m F5)", async () => {
    const target = blockingApp();
    for (const n of [1, 2, 3, 4, 5]) await untilBlocked(target, `64:ff9b:0:${n}::1`);
    for (const n of [1, 2, 3, 4, 5]) await untilBlocked(target, `0:0:0:${n}::1`);
    expect(blockRows(target).filter((row) => row.address.endsWith("/48"))).toEqual([]);
    expect((await send(target, "/openapi.json", { peer: "64:ff9b:0:99::1" })).status).toBe(200);
  });

  test("addresses of RFC 8215's local-use translation prefix are keyed one by one, as 64:ff9b::/96's are (probe 90a F6)", async () => {
    const target = blockingApp();
    await untilBlocked(target, "64:ff9b:1::c000:201");
    expect(blockRows(target).map((row) => row.address)).toEqual(["64:ff9b:1::c000:201/128"]);
    expect((await send(target, "/openapi.json", { peer: "64:ff9b:1::cb00:7101" })).status).toBe(
      200,
    );
  });

  test("the admin audit filter finds a /48's block by any address inside it", async () => {
    const target = blockingApp({ RATE_LIMIT_ALLOW_CIDRS: "203.0.113.50/32" });
    const admin = await signUp(target, { role: "admin", peer: "203.0.113.50" });
    for (const n of [1, 2, 3, 4]) await untilBlocked(target, `2001:db8:e:${n}::1`);
    target.services.audit.flush();
    const types = async (ip: string) => {
      const response = await send(target, `/api/admin/audit?type=ip.blocked&ip=${ip}`, {
        headers: bearer(admin.accessToken),
        peer: "203.0.113.50",
      });
      return ((await response.json()) as { events: { ip: string }[] }).events.map((e) => e.ip);
    };
    expect(await types("2001:db8:e:ffff::9")).toEqual(["2001:db8:e::/48"]);
    expect((await types("2001:db8:e:2::5")).sort()).toEqual([
      "2001:db8:e:2::/64",
      "2001:db8:e::/48",
    ]);
    expect(await types("2001:db8:f::1")).toEqual([]);
  });

  test("IPv4 addresses of one /24 and translated IPv4 addresses are blocked one by one, never as a network", async () => {
    const target = blockingApp();
    for (const n of [1, 2, 3, 4, 5]) await untilBlocked(target, `198.51.100.${n}`);
    for (const n of [1, 2, 3, 4, 5]) await untilBlocked(target, `64:ff9b::c633:64${n}`);
    expect(
      blockRows(target).filter((row) => row.address.includes("/48") || row.address.includes("/24")),
    ).toEqual([]);
    expect((await send(target, "/openapi.json", { peer: "198.51.100.77" })).status).toBe(200);
    expect((await send(target, "/openapi.json", { peer: "64:ff9b::c633:6477" })).status).toBe(200);
  });
});

describe("a /48 never blocked as a whole", () => {
  for (const [name, env, peerOf] of [
    [
      "one holding a trusted proxy",
      { TRUST_PROXY: "2001:db8:a:ffff::1" },
      (n: number) => `2001:db8:a:${n}::1`,
    ],
    [
      "one holding an address exempt from the limits",
      { RATE_LIMIT_ALLOW_CIDRS: "2001:db8:a:ffff::/64" },
      (n: number) => `2001:db8:a:${n}::1`,
    ],
  ] as const) {
    test(`${name}: its /64s are blocked one by one`, async () => {
      const target = blockingApp(env);
      for (const n of [1, 2, 3, 4, 5]) {
        expect((await untilBlocked(target, peerOf(n))).at(-1)).toBe(403);
      }
      expect(blockRows(target).map((row) => row.address)).toEqual(
        [1, 2, 3, 4, 5].map((n) => `${peerOf(n).slice(0, -3)}::/64`),
      );
      expect((await send(target, "/openapi.json", { peer: peerOf(0x99) })).status).toBe(200);
    });
  }

  test("by default, the sixteenth distinct /64: fifteen leave the /48 open", async () => {
    const target = blockingApp({ IP_BLOCK_IPV6_SITE_BLOCKS: "" });
    for (let n = 1; n <= 15; n++) await untilBlocked(target, `2001:db8:f:${n}::1`);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:f:99::1" })).status).toBe(200);
    await untilBlocked(target, "2001:db8:f:16::1");
    expect((await send(target, "/openapi.json", { peer: "2001:db8:f:98::1" })).status).toBe(403);
  });

  test("IP_BLOCK_IPV6_SITE_BLOCKS=0: never", async () => {
    const target = blockingApp({ IP_BLOCK_IPV6_SITE_BLOCKS: "0" });
    for (const n of [1, 2, 3, 4, 5, 6]) await untilBlocked(target, `2001:db8:c:${n}::1`);
    expect(blockRows(target).filter((row) => row.address.endsWith("/48"))).toEqual([]);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:c:99::1" })).status).toBe(200);
  });

  test("IP_BLOCK_IPV6_SITE_BLOCKS=2: the second", async () => {
    const target = blockingApp({ IP_BLOCK_IPV6_SITE_BLOCKS: "2" });
    await untilBlocked(target, "2001:db8:d:1::1");
    expect((await send(target, "/openapi.json", { peer: "2001:db8:d:99::1" })).status).toBe(200);
    await untilBlocked(target, "2001:db8:d:2::1");
    expect((await send(target, "/openapi.json", { peer: "2001:db8:d:98::1" })).status).toBe(403);
  });
});

describe("an admin's block of a /48 (probe 90a, the runbook's `blocks:add` of a /48)", () => {
  test("the API and the CLI block a whole /48 written as one; other prefixes, a translated one, the admin's own /48 and a proxy's are refused", async () => {
    const target = blockingApp({
      RATE_LIMIT_ALLOW_CIDRS: "2001:db8:aa:1::/64",
      TRUST_PROXY: "2001:db8:bb:1::1",
    });
    const admin = await signUp(target, { role: "admin", peer: "2001:db8:aa:1::5" });
    const block = (address: string, peer = "2001:db8:aa:1::5", headers = {}) =>
      send(target, "/api/admin/blocks", {
        headers: { ...bearer(admin.accessToken), ...headers },
        peer,
        body: { address, ttlMinutes: 60, reason: "flood" },
      });
    const made = await block("2001:db8:6:abcd::1/48");
    expect(made.status).toBe(201);
    expect(await made.json()).toMatchObject({ address: "2001:db8:6::/48", source: "admin" });
    const inside = await send(target, "/openapi.json", { peer: "2001:db8:6:ffff::9" });
    expect(inside.status).toBe(403);
    expect(Number(inside.headers.get("retry-after"))).toBe(60 * 60);
    expect((await send(target, "/openapi.json", { peer: "2001:db8:7::9" })).status).toBe(200);
    for (const address of [
      "2001:db8:6::/47",
      "2001:db8:6::/64",
      "::ffff:10.0.0.0/48",
      "10.0.0.0/24",
      "2001:db8:6::/048",
      // A /48 of translated IPv4 clients, keyed one by one, which no /48 block would refuse, and
      // `::/16`'s (loopback, IPv4-compatible addresses): refused too (probe 90j F3).
      "64:ff9b::/48",
      "64:ff9b:1::/48",
      "64:ff9b::10.0.0.0/48",
      "::10.0.0.0/48",
      "::/48",
      "0:1::/48",
    ]) {
      const refused = await block(address);
      expect({ address, status: refused.status }).toEqual({ address, status: 422 });
    }
    // The admin's own /48, and one holding a proxy the request came through.
    expect((await block("2001:db8:aa::/48")).status).toBe(409);
    const viaProxy = await block("2001:db8:bb::/48", "2001:db8:bb:1::1", {
      "x-forwarded-for": "2001:db8:aa:1::5",
    });
    expect(viaProxy.status).toBe(409);
    expect((await block("64:ff9b:2::/48")).status).toBe(201);

    const cli = await cliInProcess(
      ["blocks:add", "--address", "2001:db8:7::/48", "--ttl", "30m", "--reason", "flood"],
      { DATABASE_PATH: target.databasePath },
    );
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain("blocked 2001:db8:7::/48 until");
    const wrong = await cliInProcess(
      ["blocks:add", "--address", "2001:db8:7::/56", "--ttl", "30m", "--reason", "flood"],
      { DATABASE_PATH: target.databasePath },
    );
    expect(wrong.code).toBe(2);
  });
});

test("a trusted proxy in a blocked /48 is neither refused by it nor told of it in a 429's Retry-After (probe 90h F2)", async () => {
  const target = blockingApp({ TRUST_PROXY: "2001:db8:cc:1::1" });
  target.services.ipBlocks.block({
    address: "2001:db8:cc::/48",
    reason: "flood",
    ttlMs: 60 * MINUTE,
    source: "admin",
  });
  const statuses: Response[] = [];
  for (let i = 0; i < 3; i++) {
    statuses.push(await send(target, "/openapi.json", { peer: "2001:db8:cc:1::1" }));
  }
  expect(statuses.map((response) => response.status)).toEqual([200, 429, 429]);
  expect(Number(statuses[2]!.headers.get("retry-after"))).toBeLessThanOrEqual(120);
  // A client behind it, in the same /48, is refused by the block.
  const behind = await send(target, "/openapi.json", {
    peer: "2001:db8:cc:1::1",
    headers: { "x-forwarded-for": "2001:db8:cc:9::1" },
  });
  expect(behind.status).toBe(403);
});
