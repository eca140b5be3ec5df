/**
 * The export's body is read as it is sent, a chunk at a time: its work is cut into slices with
 * other requests let in between (probe 38b F1), and a client that stops taking it is ended by the
 * export's own stall timer, not Bun's idle timeout (probe 38b F2).
 */
import { expect, test } from "bun:test";
import { createEndsInFlight } from "../../src/ends-in-flight";
import { exportBody } from "../../src/modules/privacy";

/** Pieces that each take about `ms` of work, counting how many were made. */
function slowPieces(count: number, ms: number, made: { count: number }) {
  return (function* () {
    for (let i = 0; i < count; i++) {
      const until = performance.now() + ms;
      while (performance.now() < until);
      made.count++;
      yield "x".repeat(100);
    }
  })();
}

/** Whether the promise rejects (the stream is errored without a reason: see exportBody). */
async function rejects(promise: Promise<unknown>): Promise<boolean> {
  try {
    await promise;
    return false;
  } catch {
    return true;
  }
}

const events = () => {
  const seen: string[] = [];
  return {
    seen,
    failed: () => seen.push("failed"),
    stalled: () => seen.push("stalled"),
    closed: () => seen.push("closed"),
    interrupted: () => seen.push("interrupted"),
  };
};

test("a long piece of work lets other work in between its slices, within one chunk", async () => {
  const made = { count: 0 };
  // 300 pieces of ~1 ms: 30 KB, under one chunk, ~300 ms of work.
  const body = exportBody(slowPieces(300, 1, made), events());
  let madeWhenOtherWorkRan = -1;
  setImmediate(() => {
    madeWhenOtherWorkRan = made.count;
  });
  const text = await new Response(body).text();
  expect(text).toHaveLength(30_000);
  expect(madeWhenOtherWorkRan).toBeGreaterThanOrEqual(0);
  expect(madeWhenOtherWorkRan).toBeLessThan(300);
});

test("a fast reader of many chunks lets other work in between the chunks", async () => {
  const made = { count: 0 };
  // 4,000 quick pieces: 400 KB, seven chunks.
  const body = exportBody(slowPieces(4000, 0, made), events());
  const seenBetween: number[] = [];
  const tick = () => {
    seenBetween.push(made.count);
    if (made.count < 4000) setImmediate(tick);
  };
  setImmediate(tick);
  const text = await new Response(body).text();
  expect(text).toHaveLength(400_000);
  expect(new Set(seenBetween.filter((n) => n > 0 && n < 4000)).size).toBeGreaterThanOrEqual(3);
});

test("a client that takes nothing more for the stall time is ended there: stalled, the rest never made", async () => {
  const made = { count: 0 };
  const seen = events();
  const body = exportBody(slowPieces(2000, 0, made), seen, 50);
  const reader = body.getReader();
  const first = await reader.read();
  expect(first.done).toBe(false);
  await Bun.sleep(150);
  expect(seen.seen).toEqual(["stalled"]);
  const madeThen = made.count;
  expect(madeThen).toBeLessThan(2000);
  expect(await rejects(reader.read())).toBe(true);
  expect(made.count).toBe(madeThen);
});

test("a client that never takes the first chunk is ended at the stall time too: stalled, nothing made (probe 60b note)", async () => {
  const made = { count: 0 };
  const seen = events();
  const body = exportBody(slowPieces(2000, 0, made), seen, 50);
  await Bun.sleep(150);
  expect(seen.seen).toEqual(["stalled"]);
  expect(made.count).toBe(0);
  expect(await rejects(body.getReader().read())).toBe(true);
});

test("a client reading slower than a chunk a stall time apart is never ended; the whole document arrives", async () => {
  const seen = events();
  const body = exportBody(slowPieces(2000, 0, { count: 0 }), seen, 100);
  const reader = body.getReader();
  let length = 0;
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    length += read.value.length;
    await Bun.sleep(60);
  }
  expect(length).toBe(200_000);
  expect(seen.seen).toEqual([]);
});

test("a client closing the connection mid-way is told apart from a failure: closed, the rest never made", async () => {
  const made = { count: 0 };
  const seen = events();
  const body = exportBody(slowPieces(2000, 0, made), seen);
  const reader = body.getReader();
  await reader.read();
  await reader.cancel();
  const madeThen = made.count;
  await Bun.sleep(20);
  expect(seen.seen).toEqual(["closed"]);
  expect(made.count).toBe(madeThen);
  expect(madeThen).toBeLessThan(2000);
});

test("a piece that throws cuts the answer and is reported once", async () => {
  const seen = events();
  const pieces = (function* () {
    yield "{";
    throw new Error("database is locked");
  })();
  expect(await rejects(new Response(exportBody(pieces, seen)).text())).toBe(true);
  expect(seen.seen).toEqual(["failed"]);
});

test("an export ended by the stop at its drain time says so, once, and is not then counted as the client's leaving (probe 55a F1)", async () => {
  const seen = events();
  const inFlight = createEndsInFlight();
  const body = exportBody(slowPieces(2000, 0, { count: 0 }), seen, 60_000, inFlight);
  const reader = body.getReader();
  expect((await reader.read()).done).toBe(false);
  inFlight.endAll();
  expect(await rejects(reader.read())).toBe(true);
  await reader.cancel().catch(() => undefined);
  inFlight.endAll();
  expect(seen.seen).toEqual(["interrupted"]);
});

test("an export read to its end, or left by its client, is no longer the stop's to end", async () => {
  const inFlight = createEndsInFlight();
  const whole = events();
  await new Response(exportBody(slowPieces(10, 0, { count: 0 }), whole, 60_000, inFlight)).text();
  const left = events();
  const reader = exportBody(slowPieces(2000, 0, { count: 0 }), left, 60_000, inFlight).getReader();
  await reader.read();
  await reader.cancel();
  inFlight.endAll();
  expect([whole.seen, left.seen]).toEqual([[], ["closed"]]);
});
