import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { afterTransaction } from "../../src/db/after-transaction";

test("runs once the transaction it was called in has ended, committed or rolled back", async () => {
  const sqlite = new Database(":memory:");
  sqlite.run("CREATE TABLE t (n INTEGER)");
  const seen: number[] = [];
  const count = () => (sqlite.query("SELECT count(*) AS n FROM t").get() as { n: number }).n;
  sqlite.transaction(() => {
    sqlite.run("INSERT INTO t VALUES (1)");
    afterTransaction(sqlite, () => seen.push(count()));
  })();
  expect(() =>
    sqlite.transaction(() => {
      sqlite.run("INSERT INTO t VALUES (2)");
      afterTransaction(sqlite, () => seen.push(count()));
      throw new Error("rolled back");
    })(),
  ).toThrow("rolled back");
  await Bun.sleep(0);
  expect(seen).toEqual([1, 1]);
  sqlite.close();
});

test("waits while another transaction is open, and tells of a database closed first", async () => {
  const sqlite = new Database(":memory:");
  sqlite.run("CREATE TABLE t (n INTEGER)");
  const seen: string[] = [];
  afterTransaction(sqlite, () => seen.push(`ran, in a transaction: ${sqlite.inTransaction}`));
  // A transaction opened before the check runs: the check waits for its end.
  sqlite.run("BEGIN");
  await Bun.sleep(5);
  expect(seen).toEqual([]);
  sqlite.run("COMMIT");
  await Bun.sleep(5);
  expect(seen).toEqual(["ran, in a transaction: false"]);

  const closed: unknown[] = [];
  afterTransaction(
    sqlite,
    () => seen.push("ran after close"),
    (error) => closed.push(error),
  );
  sqlite.close();
  await Bun.sleep(5);
  expect(seen).toHaveLength(1);
  expect(String(closed[0])).toContain("closed");
});
