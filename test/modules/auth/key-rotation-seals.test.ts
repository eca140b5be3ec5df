/**
 * What a writer of the database file (without the secrets) can do to a key's rotation: the sealed
 * lineages decide whether a key was rotated and by which key (probe 19d F3), and a key whose
 * lineage fails its seal shows as such to admins (19d F2).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { auditRows } from "../../support/payments";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

interface KeyView {
  id: string;
  replacedBy: string | null;
  tampered: boolean;
  lineageTampered: boolean;
}

async function setUp() {
  current = buildTestApp();
  const app = current;
  const headers = bearer((await signUp(app, { role: "admin" })).accessToken);
  const rotate = (id: string) =>
    send(app, `/api/admin/api-keys/${id}/rotate`, { headers, body: { graceMinutes: 5 } });
  const listed = async () => {
    const response = await send(app, "/api/admin/api-keys", { headers });
    expect(response.status).toBe(200);
    const { keys } = (await response.json()) as { keys: KeyView[] };
    return new Map(keys.map((key) => [key.id, key]));
  };
  const sqlite = app.db.$client;
  return { app, rotate, listed, sqlite };
}

describe("rotation follows the sealed lineages, not replaced_by", () => {
  test("a replaced_by written into the file neither blocks a rotation nor shows; the rotation is reported", async () => {
    const { app, rotate, listed, sqlite } = await setUp();
    const target = createKey(app, ["chat"]);
    const other = createKey(app, ["chat"]);
    sqlite.run("UPDATE api_keys SET replaced_by = ? WHERE id = ?", [
      other.record.id,
      target.record.id,
    ]);
    expect((await listed()).get(target.record.id)!.replacedBy).toBeNull();
    const rotated = await rotate(target.record.id);
    expect(rotated.status).toBe(201);
    const successor = ((await rotated.json()) as { apiKey: { id: string } }).apiKey.id;
    const keys = await listed();
    expect(keys.get(target.record.id)!.replacedBy).toBe(successor);
    expect(keys.get(other.record.id)!.replacedBy).toBeNull();
    const reports = auditRows(app, "auth.credential_tampered").map((row) => JSON.parse(row.detail));
    expect(reports).toEqual([{ table: "api_keys", id: target.record.id, column: "replaced_by" }]);
    // The rotation wrote its own successor over the forged one.
    expect(
      sqlite.query("SELECT replaced_by AS r FROM api_keys WHERE id = ?").get(target.record.id),
    ).toEqual({ r: successor });
  });

  test("a rotated key whose replaced_by is cleared in the file is still rotated: a second rotation is 404", async () => {
    const { app, rotate, listed, sqlite } = await setUp();
    const target = createKey(app, ["chat"]);
    const first = await rotate(target.record.id);
    expect(first.status).toBe(201);
    const successor = ((await first.json()) as { apiKey: { id: string } }).apiKey.id;
    for (const forged of [null, target.record.id, "not-a-key"]) {
      sqlite.run("UPDATE api_keys SET replaced_by = ? WHERE id = ?", [forged, target.record.id]);
      const again = await rotate(target.record.id);
      expect(again.status).toBe(404);
      expect((await listed()).get(target.record.id)!.replacedBy).toBe(successor);
    }
    // The successor itself is not rotated, and rotates once.
    expect((await listed()).get(successor)!.replacedBy).toBeNull();
    expect((await rotate(successor)).status).toBe(201);
    expect((await rotate(successor)).status).toBe(404);
    expect(sqlite.query("SELECT count(*) AS n FROM api_keys").get()).toEqual({ n: 3 });
  });

  test("a key row claiming a rotated key's lineage (without its seal) makes it neither rotated nor a successor", async () => {
    const { app, rotate, listed, sqlite } = await setUp();
    const target = createKey(app, ["chat"]);
    const forger = createKey(app, ["chat"]);
    // The forger's row is newer than the target's, so by id it would come next in the lineage.
    expect(forger.record.id > target.record.id).toBe(true);
    sqlite.run("UPDATE api_keys SET lineage = ? WHERE id = ?", [
      target.record.id,
      forger.record.id,
    ]);
    const keys = await listed();
    expect(keys.get(target.record.id)!.replacedBy).toBeNull();
    expect(keys.get(forger.record.id)!.lineageTampered).toBe(true);
    expect((await rotate(target.record.id)).status).toBe(201);
  });
});

describe("a key whose lineage fails its seal", () => {
  test("shows lineageTampered (tampered stays for a refused row); it cannot be rotated", async () => {
    const { app, rotate, listed, sqlite } = await setUp();
    const intact = createKey(app, ["chat"]);
    const forged = createKey(app, ["chat", "payments"]);
    sqlite.run("UPDATE api_keys SET lineage = ? WHERE id = ?", [
      intact.record.id,
      forged.record.id,
    ]);
    const keys = await listed();
    expect(keys.get(forged.record.id)).toMatchObject({ tampered: false, lineageTampered: true });
    expect(keys.get(intact.record.id)).toMatchObject({ tampered: false, lineageTampered: false });
    expect((await rotate(forged.record.id)).status).toBe(404);
    // Its other scopes still work.
    expect((await send(app, "/api/auth/me", { headers: { "x-api-key": forged.key } })).status).toBe(
      200,
    );
  });
});
