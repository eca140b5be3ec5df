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

  test("a blob (only a row written into the file holds one) seals by its bytes, apart from any text (probe 96b F3)", () => {
    const bytes = new Uint8Array([0x70, 0x61, 0x79]);
    expect(seal(["x", bytes])).toBe(seal(["x", new Uint8Array([0x70, 0x61, 0x79])]));
    expect(seal(["x", bytes])).not.toBe(seal(["x", new Uint8Array([0x70, 0x61, 0x78])]));
    for (const text of ["pay", "706179", { 0: 0x70, 1: 0x61, 2: 0x79 }, null]) {
      expect(seal(["x", bytes])).not.toBe(seal(["x", text]));
    }
    // Megabytes of it are sealed as its hex (JSON wrote one key per byte: minutes for a file).
    expect(seal(["x", new Uint8Array(4 * 1024 * 1024)])).toMatch(/^[\w-]{43}$/);
  });

  test("finite values seal as before: the same fields, the same seal; another label, another seal", () => {
    expect(seal(["x", 1, "a", null])).toBe(seal(["x", 1, "a", null]));
    expect(seal(["x", 1])).not.toBe(seal(["x", "1"]));
    const other = createRowSealer("row-seal-test-secret-0123456789abcdef", "other label");
    expect(other(["x", 1])).not.toBe(seal(["x", 1]));
  });
});
