/**
 * The seams: a feature plugs in with its folder and one entry in the feature list, and the layers
 * import one way (plugins never import modules).
 */
import { afterEach, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Elysia } from "elysia";
import type { Feature } from "../src/modules/feature";
import { buildTestApp, send, type TestApp } from "./support/app";
import { bearer, signUp } from "./support/auth";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

test("a feature brings its routes, route classes, readiness, maintenance, privacy and shutdown", async () => {
  const calls: string[] = [];
  let healthy = true;
  const notes: Feature = {
    name: "notes",
    routeClasses: [{ routes: ["POST /api/notes"], policy: "register", bodyLimit: "chat" }],
    routes: ({ auth }) =>
      new Elysia().use(auth).post("/api/notes", () => ({ saved: true }), { public: true }),
    readiness: {
      notes: () => {
        if (!healthy) throw new Error("notes store down");
      },
    },
    maintenance: () => calls.push("maintenance"),
    privacy: [
      {
        name: "notes",
        export: (userId) => [{ owner: userId }],
        erase: () => calls.push("erase"),
      },
    ],
    close: () => calls.push("close"),
  };
  current = buildTestApp({ extraFeatures: [notes] });

  // Its route class applies: the register policy's 3 per address, the chat body limit.
  const statuses = [];
  for (let i = 0; i < 4; i++) {
    statuses.push(
      (await send(current, "/api/notes/", { body: { text: "hi" }, peer: "192.0.2.4" })).status,
    );
  }
  expect(statuses).toEqual([200, 200, 200, 429]);
  const large = await send(current, "/api/notes", { body: { text: "x".repeat(50 * 1024) } });
  expect(large.status).toBe(413);

  expect((await send(current, "/ready")).status).toBe(200);
  healthy = false;
  const ready = await send(current, "/ready");
  expect(ready.status).toBe(503);
  expect(JSON.stringify(await ready.json())).toContain("notes store down");

  const user = await signUp(current);
  const exported = await send(current, "/api/me/export", { headers: bearer(user.accessToken) });
  expect(((await exported.json()) as { notes: unknown }).notes).toEqual([{ owner: user.userId }]);
  expect(
    (await send(current, "/api/me", { method: "DELETE", headers: bearer(user.accessToken) }))
      .status,
  ).toBe(204);
  expect(calls).toContain("erase");
  current.services.runMaintenance();
  expect(calls).toContain("maintenance");
  current.close();
  expect(calls).toContain("close");
  current = null;
});

test("plugins never import modules", () => {
  const root = join(import.meta.dir, "..", "src");
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
      entry.isDirectory() ? files(join(dir, entry.name)) : [join(dir, entry.name)],
    );
  const offenders = files(join(root, "plugins")).filter((file) =>
    /from "(\.\.\/)+modules\//.test(readFileSync(file, "utf8")),
  );
  expect(offenders).toEqual([]);
});
