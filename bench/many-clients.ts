/**
 * @module
 * Many clients: a sustained phase in which every request comes from a new address (a random
 * `X-Forwarded-For`, `TRUST_PROXY=loopback`), as a rotating-address flood sends, against bare
 * Elysia (A) and Palisade (B) in turn on the same public route, with Palisade on one address (the
 * HTTP suite's load) in the same rounds so that what a new client costs is read from one run.
 * Palisade keeps one limiter row per client and window, so besides req/s and RSS the phase reports
 * the `rate_limit_counters` row count and the database and WAL sizes at its end — and again once
 * every window has passed and pruning has run (the bench server moves its clock on, on SIGUSR2,
 * instead of waiting minutes).
 */
import { Database } from "bun:sqlite";
import { existsSync, statSync } from "node:fs";
import { SERVERS } from "./http";
import { type BenchServer, memoryOf, runWrk, startServer } from "./proc";
import { type Summary, summarize } from "./stats";

export interface TableState {
  rows: number;
  dbBytes: number;
  walBytes: number;
}

export interface ManyClientResults {
  rps: Summary;
  bareRps: Summary;
  ratio: Summary;
  /** Palisade on the same route with one address, in the same rounds (the HTTP suite's load). */
  oneAddressRps: Summary;
  /**
   * Palisade's CPU a request (µs, all its threads) with a new address each and with one address,
   * in the same rounds: their difference is what a new client costs, the limiter row on a random
   * page of the file and its share of the WAL and its checkpoint. Null where /proc was unread.
   */
  cpuUs: { newAddress: Summary; oneAddress: Summary } | null;
  /**
   * The most other work on the measured cores, and the most time stolen from them, in any round of
   * A or B (shares of a core); null where unread.
   */
  otherCpuMax: number | null;
  stealMax: number | null;
  /** Requests Palisade answered in the phase, warm-up included (each a new client). */
  requests: number;
  errors: number;
  /** Palisade's RSS at the end of the load and its peak, kB. */
  rssKb: number;
  peakRssKb: number;
  atEnd: TableState;
  afterPrune: TableState & { rssKb: number; waitedMs: number };
}

const size = (path: string) => (existsSync(path) ? statSync(path).size : 0);

/** The largest value, or null when any is unknown. */
function largest(values: readonly (number | null)[]): number | null {
  return known(values) ? Math.max(...values) : null;
}

function known(values: readonly (number | null)[]): values is number[] {
  return values.length > 0 && values.every((v) => v !== null);
}

export function tableState(dbPath: string): TableState {
  const db = new Database(dbPath, { readonly: true });
  try {
    const row = db.query("SELECT count(*) AS n FROM rate_limit_counters").get() as { n: number };
    return { rows: row.n, dbBytes: size(dbPath), walBytes: size(`${dbPath}-wal`) };
  } finally {
    db.close();
  }
}

export async function measureManyClients(options: {
  rounds: number;
  seconds: number;
  warmUp: boolean;
  dir: string;
  log: (line: string) => void;
}): Promise<ManyClientResults> {
  const { rounds, seconds, dir, log } = options;
  const env = { BENCH_DIR: dir, TRUST_PROXY: "loopback" };
  const bare = await startServer(SERVERS.A.command, env);
  const palisade = await startServer(SERVERS.B.command, env);
  try {
    const dbPath = palisade.info.db!;
    const load = (server: BenchServer, secs: number, manyClients = true) =>
      runWrk({
        port: server.port,
        serverPid: server.proc.pid,
        path: "/bench",
        seconds: secs,
        manyClients,
      });
    // A second's warm-up each, discarded (the quick run skips it); its clients count in the table.
    let warmRequests = 0;
    if (options.warmUp) {
      await load(bare, 1);
      warmRequests = (await load(palisade, 1)).requests;
    }
    const others: (number | null)[] = [];
    const steals: (number | null)[] = [];
    const a: number[] = [];
    const b: number[] = [];
    const ratios: number[] = [];
    const one: number[] = [];
    const cpuNew: (number | null)[] = [];
    const cpuOne: (number | null)[] = [];
    let requests = warmRequests;
    let errors = 0;
    for (let round = 0; round < rounds; round++) {
      const floor = await load(bare, seconds);
      const run = await load(palisade, seconds);
      const oneAddress = await load(palisade, seconds, false);
      for (const measured of [floor, run, oneAddress]) {
        others.push(measured.otherCpuShare);
        steals.push(measured.stealShare);
      }
      a.push(floor.rps);
      b.push(run.rps);
      ratios.push(run.rps / floor.rps);
      one.push(oneAddress.rps);
      cpuNew.push(run.cpuUsPerRequest);
      cpuOne.push(oneAddress.cpuUsPerRequest);
      requests += run.requests;
      errors += run.errors;
    }
    if (errors > 0) log(`  ! many clients: ${errors} errors or non-2xx answers`);
    const memory = memoryOf(palisade.proc.pid) ?? { rssKb: 0, peakKb: 0 };
    const atEnd = tableState(dbPath);

    // Every window over: the server's clock moves an hour on and its maintenance prunes, a
    // bounded batch per event-loop turn until no expired row is left.
    const started = performance.now();
    palisade.proc.kill("SIGUSR2");
    await palisade.waitFor("advanced");
    let after = tableState(dbPath);
    for (let last = -1; after.rows > 0 && after.rows !== last; ) {
      last = after.rows;
      await Bun.sleep(200);
      after = tableState(dbPath);
    }
    const waitedMs = performance.now() - started;
    return {
      rps: summarize(b),
      bareRps: summarize(a),
      ratio: summarize(ratios),
      oneAddressRps: summarize(one),
      cpuUs:
        known(cpuNew) && known(cpuOne)
          ? { newAddress: summarize(cpuNew), oneAddress: summarize(cpuOne) }
          : null,
      otherCpuMax: largest(others),
      stealMax: largest(steals),
      requests,
      errors,
      rssKb: memory.rssKb,
      peakRssKb: memory.peakKb,
      atEnd,
      afterPrune: { ...after, rssKb: memoryOf(palisade.proc.pid)?.rssKb ?? 0, waitedMs },
    };
  } finally {
    await Promise.all([bare.stop(), palisade.stop()]);
  }
}
