/**
 * An audit event's route is client text when the request was refused before routing: the path as
 * sent. It is chained into the log, which can then never be redacted, so it is stored as the access
 * log writes it: secrets and credential shapes scrubbed, control characters escaped, cut to 512.
 */
import { expect, test } from "bun:test";
import { generateApiKey } from "../../../src/plugins/auth/api-key-format";
import { send, TEST_JWT_SECRET, type TestApp } from "../../support/app";
import { appClosedAfter, cleanupsAfterEach } from "../../support/cleanups";

const cleanups = cleanupsAfterEach();

const app = (): TestApp => appClosedAfter(cleanups);

function rejectedRoutes(target: TestApp): string[] {
  target.services.audit.flush();
  return target.db.$client
    .query<{ route: string }, []>(
      "SELECT route FROM audit_events WHERE type = 'request.rejected' ORDER BY id",
    )
    .all()
    .map((row) => row.route);
}

const JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlc2lnbmF0dXJlc2ln";

test("a refused path holding a configured secret, an API key or a JWT is stored without them", async () => {
  const target = app();
  const key = generateApiKey("live");
  for (const [i, secret] of [TEST_JWT_SECRET, key, JWT].entries()) {
    // %00 makes the guard refuse the path (400 BAD_PATH) before any route; each from its own
    // address, since one address's refusals of one code are audited once a minute.
    const response = await send(target, `/x%00/${secret}/tail`, { peer: `192.0.2.${30 + i}` });
    expect(response.status).toBe(400);
  }
  const routes = rejectedRoutes(target);
  expect(routes).toHaveLength(3);
  for (const route of routes) {
    expect(route).toStartWith("GET /x%00/");
    expect(route).toEndWith("/tail");
  }
  const stored = routes.join("\n");
  for (const secret of [TEST_JWT_SECRET, key, JWT]) expect(stored).not.toContain(secret);
});

test("a refused path of 16 KB is stored cut, not whole", async () => {
  const target = app();
  const response = await send(target, `/${"B".repeat(16_000)}`);
  expect(response.status).toBe(414);
  const [route] = rejectedRoutes(target);
  expect(route!.length).toBeLessThanOrEqual(513);
  expect(route).toStartWith("GET /BBBB");
});

test("a detail that quotes the client (a refused header's name) is stored scrubbed too", async () => {
  const target = app();
  const key = generateApiKey("live").toLowerCase();
  const request = new Request("http://localhost/api/auth/csrf", {
    headers: { [key]: "a\u007fb" },
  });
  const response = await target.app.handle(request);
  expect(response.status).toBe(400);
  target.services.audit.flush();
  const details = target.db.$client
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'request.rejected'",
    )
    .all()
    .map((row) => row.detail);
  expect(details).toHaveLength(1);
  expect(details[0]).toContain("control characters in ");
  expect(details[0]).not.toContain(key);
});
