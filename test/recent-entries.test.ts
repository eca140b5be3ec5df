import { expect, test } from "bun:test";
import { RecentEntries } from "../src/recent-entries";

test("remembers about the last `bound` subjects: never more, the newest half always, a subject set again counted as new", () => {
  const known = new RecentEntries<number>(10);
  for (let i = 0; i < 40; i++) {
    known.set(`s${i}`, i);
    // s0 set again each time: always among the newest.
    known.set("s0", 100 + i);
    const kept = Array.from({ length: 40 }, (_, j) => known.get(`s${j}`)).filter(
      (entry) => entry !== undefined,
    );
    expect(kept.length).toBeLessThanOrEqual(10);
    for (let j = Math.max(1, i - 3); j <= i; j++) expect(known.get(`s${j}`)).toBe(j);
    expect(known.get("s0")).toBe(100 + i);
  }
  expect(known.get("s1")).toBeUndefined();
  known.delete("s39");
  expect(known.get("s39")).toBeUndefined();
});
