import { describe, expect, test } from "bun:test";
import { firstLine, namedFirstLine } from "../src/error-line";

describe("an error's first line", () => {
  test("a driver's message that goes on with a listing is cut at its first line", () => {
    const error = new Error("disk I/O error\n    at sqlite3_step (native)\nSELECT * FROM users");
    expect(firstLine(error)).toBe("disk I/O error");
    expect(namedFirstLine(error)).toBe("Error: disk I/O error");
  });

  test("a thrown value that is not an Error is read as text, its first line only", () => {
    expect(firstLine("refused\nsecond line")).toBe("refused");
    expect(firstLine(42)).toBe("42");
    expect(namedFirstLine(undefined)).toBe("undefined");
  });

  test("an error's name comes from its class", () => {
    class SQLiteLikeError extends Error {
      override name = "SQLiteError";
    }
    expect(namedFirstLine(new SQLiteLikeError("database or disk is full\nmore"))).toBe(
      "SQLiteError: database or disk is full",
    );
  });
});
