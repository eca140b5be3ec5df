import { describe, expect, test } from "bun:test";
import { createRowSealer } from "../../src/db/row-seal";

describe("row seals", () => {
  const seal = createRowSealer("row-seal-test-secret-0123456789abcdef", "test label");

  test("Infinity, -Infinity and NaN never seal as the null JSON would write for them (probe 14f F2)", () => {
    const sealedNull = seal(["payment", null]);
    for (const value of [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, Number.NaN]) {
      expect(seal(["payment", value])).not.toBe(sealedNull);
    }
    expect(seal(["payment", Number.POSITIVE_INFINITY])).not.toBe(
      seal(["payment", Number.NEGATIVE_INFINITY]),
    );
    // Nor as the text a column could hold instead.
    expect(seal(["payment", Number.POSITIVE_INFINITY])).not.toBe(seal(["payment", "Infinity"]));
  });

  test("finite values seal as before: the same fields, the same seal; another label, another seal", () => {
    expect(seal(["x", 1, "a", null])).toBe(seal(["x", 1, "a", null]));
    expect(seal(["x", 1])).not.toBe(seal(["x", "1"]));
    const other = createRowSealer("row-seal-test-secret-0123456789abcdef", "other label");
    expect(other(["x", 1])).not.toBe(seal(["x", 1]));
  });
});
