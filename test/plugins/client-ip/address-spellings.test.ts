/**
 * Every spelling of an address that is not canonical dotted-decimal IPv4 or valid IPv6 is refused
 * at every entry point that reads an address: the parser, the admin blocks API, the blocks:add
 * command, TRUST_PROXY, RATE_LIMIT_ALLOW_CIDRS, X-Forwarded-For (when trusted) and the socket peer.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../../../src/config";
import {
  formatAddress,
  formatRange,
  parseCidr,
  parseIp,
} from "../../../src/plugins/client-ip/address";
import { clientKeyOf } from "../../../src/plugins/client-ip/resolve";
import { buildTestApp, fromPeer, send, type TestApp, tempDir } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { runToExit } from "../../support/process";

/** Not an address anywhere, with what inet_aton or ipaddr.js would have made of some of them. */
const REFUSED: readonly string[] = [
  "010.1.1.1", // octal: 8.1.1.1
  "0177.0.0.1", // octal: 127.0.0.1
  "1.2.3.04", // a leading zero
  "00.0.0.0",
  "0x7f.0.0.1", // hex
  "0x7f.1", // hex, short: 127.0.0.1
  "0x7f000001",
  "127.1", // short: 127.0.0.1
  "1.2.3", // short: 1.2.0.3
  "2130706433", // one integer: 127.0.0.1
  "1.2.3.256",
  "1.2.3.-1",
  "1..2.3", // an empty octet
  ".1.2.3.4",
  "1.2.3.4.",
  "1.2.3.4.5",
  "1.2 .3.4", // whitespace inside
  "1.2.3.4/33",
  "1.2.3.4:80", // a port
  "１.２.３.４", // full-width digits
  "fe80::1%eth0", // a zone id
  "fe80::1%25eth0",
  "::ffff:010.1.1.1", // an IPv4-mapped address with an octal tail
  "::ffff:127.1",
  "::ffff:1.2.3.4.5",
  "1:2:3:4:5:6:7:8:9",
  "1::2::3",
  "12345::1",
  "::g",
  "[::1]",
  "localhost",
  "example.com",
];

/** Canonical spellings, accepted everywhere, with their normal form. */
const ACCEPTED: ReadonlyArray<[string, string]> = [
  ["203.0.113.9", "203.0.113.9"],
  ["0.0.0.0", "0.0.0.0"],
  ["255.255.255.255", "255.255.255.255"],
  ["2001:db8::1", "2001:db8::1"],
  ["2001:0DB8:0000::0001", "2001:db8::1"], // leading zeros in IPv6 groups are RFC 4291
  ["::ffff:198.51.100.4", "198.51.100.4"],
];

/** CIDR spellings refused by both CIDR lists. */
const REFUSED_CIDRS: readonly string[] = [
  ...REFUSED.filter((spelling) => !spelling.includes("/")).map((spelling) => `${spelling}/32`),
  "1.2.3.4/33",
  "1.2.3.4/024",
  "1.2.3.4/",
  "/8",
  "10.0.0.0/8/8",
  "10.0.0.0/-1",
  "10.0.0.0/0x8",
  "::1/129",
];

const BASE_ENV = { APP_ENV: "development" };

describe("the parser", () => {
  test.each(REFUSED)("refuses %p", (spelling) => {
    expect(parseIp(spelling)).toBeNull();
  });
  test.each(ACCEPTED)("accepts %p", (spelling, normal) => {
    const address = parseIp(spelling);
    expect(address).not.toBeNull();
    expect(
      address!.kind() === "ipv6"
        ? (address as { toRFC5952String(): string }).toRFC5952String()
        : address!.toString(),
    ).toBe(normal);
  });
  test.each(REFUSED_CIDRS)("refuses the range %p", (spelling) => {
    expect(parseCidr(spelling)).toBeNull();
  });
  test("whitespace around an address is refused", () => {
    expect(parseIp(" 203.0.113.9")).toBeNull();
    expect(parseIp("203.0.113.9\n")).toBeNull();
  });
});

/** Every way RFC 4291 lets one IPv6 address be written: full, padded, upper case, each `::`, a dotted tail. */
function spellingsOf(groups: readonly number[]): string[] {
  const hex = groups.map((group) => group.toString(16));
  const compressed = (parts: readonly string[], values: readonly number[]): string[] => {
    const forms = [parts.join(":")];
    for (let start = 0; start < values.length; start++) {
      for (let end = start; end < values.length && values[end] === 0; end++) {
        forms.push(`${parts.slice(0, start).join(":")}::${parts.slice(end + 1).join(":")}`);
      }
    }
    return forms;
  };
  const dotted = `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`;
  const head = compressed(hex.slice(0, 6), groups.slice(0, 6)).map((form) =>
    form.endsWith("::") ? `${form}${dotted}` : `${form}:${dotted}`,
  );
  const all = [
    ...compressed(hex, groups),
    ...head,
    hex.map((group) => group.padStart(4, "0")).join(":"),
  ];
  return [...new Set([...all, ...all.map((form) => form.toUpperCase())])];
}

describe("every spelling of one address is that one address (probe 15a F1)", () => {
  // [the eight groups, what every spelling must be read as]
  const ADDRESSES: ReadonlyArray<[number[], string]> = [
    // RFC 4291's IPv4-compatible form (`::192.0.2.77`): IPv6, never the IPv4 host.
    [[0, 0, 0, 0, 0, 0, 0xc000, 0x024d], "::c000:24d"],
    // IPv4-mapped: folded to the IPv4 host however it is written.
    [[0, 0, 0, 0, 0, 0xffff, 0xc000, 0x024d], "192.0.2.77"],
    [[0, 0, 0, 0, 0, 1, 0xc000, 0x024d], "::1:c000:24d"],
    [[0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x024d], "64:ff9b::c000:24d"],
    [[0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], "2001:db8::1"],
    [[0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    [[0, 0, 0, 0, 0, 0, 0, 0], "::"],
  ];
  test.each(ADDRESSES)("%p", (groups, normal) => {
    const spellings = spellingsOf(groups);
    expect(spellings.length).toBeGreaterThan(3);
    const read = spellings.map((spelling) => {
      const address = parseIp(spelling);
      return [spelling, address && formatAddress(address)];
    });
    expect(read).toEqual(spellings.map((spelling) => [spelling, normal]));
    // A range written in any of them covers the same addresses.
    const ranges = spellings.map((spelling) => [
      spelling,
      formatRange(parseCidr(`${spelling}/104`)!),
    ]);
    const range = normal.includes(".") ? `${normal}/8` : null;
    const expected = range ?? formatRange(parseCidr(`${spellings[0]}/104`)!);
    expect(ranges).toEqual(spellings.map((spelling) => [spelling, expected]));
  });
});

describe("the key a client is counted and blocked under", () => {
  const keyOf = (text: string) => clientKeyOf(parseIp(text));
  test("an IPv6 host's /64; IPv4 its address", () => {
    expect(keyOf("2001:db8:1:2::1")).toBe("2001:db8:1:2::/64");
    expect(keyOf("2001:db8:1:2:ffff::9")).toBe("2001:db8:1:2::/64");
    expect(keyOf("203.0.113.9")).toBe("203.0.113.9");
    expect(keyOf("::ffff:203.0.113.9")).toBe("203.0.113.9");
  });
  test("an IPv4 client translated into 64:ff9b::/96 or 64:ff9b:1::/48 (NAT64, SIIT-DC) is keyed alone, not with the translator's every client (re-probe 15c F6)", () => {
    expect(keyOf("64:ff9b::8.8.8.8")).toBe("64:ff9b::808:808/128");
    expect(keyOf("64:ff9b::1.1.1.1")).toBe("64:ff9b::101:101/128");
    expect(keyOf("64:FF9B:0:0:0:0:808:808")).toBe("64:ff9b::808:808/128");
    // RFC 8215's local-use prefix, 64:ff9b:1::/48, where a network's own translator puts IPv4
    // hosts, keyed alone too (probe 90a F6); a host in 64:ff9b::/64 beyond the /96: /64.
    expect(keyOf("64:ff9b:1::8.8.8.8")).toBe("64:ff9b:1::808:808/128");
    expect(keyOf("64:ff9b:1:abcd::8.8.8.8")).toBe("64:ff9b:1:abcd::808:808/128");
    expect(keyOf("64:ff9b::1:808:808")).toBe("64:ff9b::/64");
  });
});

describe("configuration", () => {
  const refusal = (name: string, value: string): string => {
    try {
      loadConfig({ ...BASE_ENV, [name]: value });
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as Error).message;
    }
    throw new Error(`${name}=${value} was accepted`);
  };

  for (const name of ["TRUST_PROXY", "RATE_LIMIT_ALLOW_CIDRS"]) {
    test.each(
      [...REFUSED, ...REFUSED_CIDRS].filter((s) => !/^\d+$/.test(s) || name !== "TRUST_PROXY"),
    )(`${name} refuses %p`, (spelling) => {
      // In a list, each item is trimmed: "1.2 .3.4" stays refused, " 1.2.3.4" is list syntax.
      expect(refusal(name, spelling)).toStartWith(`${name} `);
    });
    test(`${name} keeps canonical spellings, normalised`, () => {
      const config = loadConfig({
        ...BASE_ENV,
        [name]: "203.0.113.0/24, 2001:0db8::/32, ::ffff:10.0.0.0/104, 198.51.100.7",
      });
      const cidrs =
        name === "TRUST_PROXY"
          ? (config.trustProxy as { cidrs: string[] }).cidrs
          : config.rateLimit.allowCidrs;
      expect(cidrs).toEqual(["203.0.113.0/24", "2001:db8::/32", "10.0.0.0/8", "198.51.100.7/32"]);
    });
  }

  test("TRUST_PROXY=2130706433 is a number of hops, not an address; too many is refused", () => {
    expect(refusal("TRUST_PROXY", "2130706433")).toStartWith("TRUST_PROXY ");
  });

  test("the service refuses to start: one line naming the variable, exit 2", async () => {
    const dir = tempDir();
    try {
      const result = await runToExit(["bun", "run", "src/index.ts"], {
        RATE_LIMIT_ALLOW_CIDRS: "0x7f.1",
        DATABASE_PATH: join(dir.path, "p.db"),
        PORT: "0",
      });
      expect(result.code).toBe(2);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).toContain('RATE_LIMIT_ALLOW_CIDRS has an invalid address "0x7f.1"');
    } finally {
      dir.remove();
    }
  });
});

describe("the admin blocks API and CLI", () => {
  let target: TestApp;
  let token: string;
  const blockRows = () =>
    target.db.$client.query("SELECT address FROM ip_blocks").all() as { address: string }[];

  test("set up", async () => {
    target = buildTestApp({ env: { RATE_LIMIT_PER_MINUTE: "100000", RATE_LIMIT_BURST: "100000" } });
    token = (await signUp(target, { role: "admin" })).accessToken;
  });
  afterAll(() => target?.close());

  const post = (address: string) =>
    send(target, "/api/admin/blocks", {
      headers: bearer(token),
      body: { address, ttlMinutes: 5, reason: "spelling test" },
      peer: "192.0.2.1",
    });

  test.each([...REFUSED, " 203.0.113.9", "203.0.113.9 "])(
    "POST /api/admin/blocks refuses %p with 422",
    async (spelling) => {
      const response = await post(spelling);
      expect(response.status).toBe(422);
      const problem = (await response.json()) as { code: string; errors: { field: string }[] };
      expect(problem.code).toBe("VALIDATION_FAILED");
      expect(problem.errors[0]!.field).toBe("body/address");
      expect(blockRows()).toEqual([]);
    },
  );

  /**
   * Runs blocks:add once per address in one child process, through the same runCli and command
   * list as `bun run cli` (a process per spelling would take a minute on a busy machine; loading
   * the CLI in this process would put every command under the coverage gate). Exit codes and
   * stderr lines, in order.
   */
  const cliTable = async (addresses: readonly string[]) => {
    const script = `
      import { COMMANDS } from "./src/cli/commands";
      import { runCli } from "./src/cli/run";
      const results = [];
      for (const address of JSON.parse(process.env.ADDRESSES)) {
        const err = [];
        const code = await runCli(
          ["blocks:add", "--address", address, "--ttl", "5m", "--reason", "spelling test"],
          process.env,
          { out() {}, err: (line) => err.push(line), readStdin: async () => "" },
          COMMANDS,
        );
        results.push({ code, err });
      }
      console.log(JSON.stringify(results));
    `;
    const result = await runToExit(["bun", "-e", script], {
      APP_ENV: "development",
      DATABASE_PATH: target.databasePath,
      ADDRESSES: JSON.stringify(addresses),
    });
    expect(result.code).toBe(0);
    return JSON.parse(result.stdout) as { code: number; err: string[] }[];
  };

  test("blocks:add refuses every spelling with exit 2 and one line", async () => {
    const spellings = [...REFUSED, " 203.0.113.9", "203.0.113.9 "];
    const results = await cliTable(spellings);
    expect(results).toHaveLength(spellings.length);
    for (const [index, result] of results.entries()) {
      expect({ spelling: spellings[index], ...result }).toEqual({
        spelling: spellings[index],
        code: 2,
        err: [
          "palisade blocks:add: --address must be a canonical dotted-decimal IPv4 or an IPv6 address, or an IPv6 /48",
        ],
      });
    }
    expect(blockRows()).toEqual([]);
  });

  test("bun run cli blocks:add exits 2 on an octal address", async () => {
    const result = await runToExit(
      [
        "bun",
        "run",
        "src/cli/index.ts",
        "blocks:add",
        "--address",
        "010.1.1.1",
        "--ttl",
        "5m",
        "--reason",
        "x",
      ],
      { APP_ENV: "development", DATABASE_PATH: target.databasePath },
    );
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      "palisade blocks:add: --address must be a canonical dotted-decimal IPv4 or an IPv6 address, or an IPv6 /48",
    );
    expect(blockRows()).toEqual([]);
  });

  test("canonical spellings are blocked as written (IPv6 as its /64)", async () => {
    expect((await post("203.0.113.9")).status).toBe(201);
    expect((await post("::ffff:198.51.100.4")).status).toBe(201);
    expect(await cliTable(["2001:0db8::1"])).toEqual([{ code: 0, err: [] }]);
    expect(
      blockRows()
        .map((r) => r.address)
        .sort(),
    ).toEqual(["198.51.100.4", "2001:db8::/64", "203.0.113.9"]);
  });
});

describe("X-Forwarded-For and the socket peer", () => {
  let target: TestApp;
  afterAll(() => target?.close());

  const lastAccessIp = () => {
    const lines = target.logs.entries.filter((e) => e.msg === "request");
    return lines[lines.length - 1]!.clientIp;
  };
  const clientOf = async (peer: string, forwardedFor?: string) => {
    const request = new Request("http://localhost/health", {
      headers: forwardedFor === undefined ? {} : { "x-forwarded-for": forwardedFor },
    });
    const response = await target.app.handle(fromPeer(request, peer));
    expect(response.status).toBe(200);
    await Bun.sleep(1);
    return lastAccessIp();
  };

  test("set up", () => {
    target = buildTestApp({ env: { TRUST_PROXY: "1" } });
  });

  // `v4:port` and `[v6]` are how proxies write an entry (the port is dropped); a header cannot
  // carry non-ASCII at all.
  const FORWARDED_FORMS = new Set(["1.2.3.4:80", "[::1]"]);
  test.each(REFUSED.filter((s) => !FORWARDED_FORMS.has(s) && /^[\x20-\x7e]*$/.test(s)))(
    "a trusted hop's %p is not an address: the proxy that wrote it is the client",
    async (spelling) => {
      expect(await clientOf("10.0.0.1", `203.0.113.50, ${spelling}`)).toBe("10.0.0.1");
    },
  );

  test.each(ACCEPTED)("a trusted hop's %p is the client", async (spelling, normal) => {
    expect(await clientOf("10.0.0.1", `6.6.6.6, ${spelling}`)).toBe(normal);
  });

  test("a blocked canonical address is not reached through another spelling", async () => {
    target.services.ipBlocks.block({
      address: "8.1.1.1",
      reason: "test",
      ttlMs: 60_000,
      source: "admin",
      createdBy: "test",
    });
    await Bun.sleep(1_100); // the in-memory copy reloads at most once a second
    const request = (xff: string) =>
      target.app.handle(
        fromPeer(
          new Request("http://localhost/api/auth/me", { headers: { "x-forwarded-for": xff } }),
          "10.0.0.1",
        ),
      );
    expect((await request("8.1.1.1")).status).toBe(403);
    // Today's ipaddr.js reads 010.1.1.1 as octal 8.1.1.1; it is not that address, nor any other.
    expect((await request("010.1.1.1")).status).toBe(401);
  });

  test.each(REFUSED)("a socket peer of %p is 'unknown', never a guess", async (spelling) => {
    expect(await clientOf(spelling)).toBe("unknown");
  });
});
