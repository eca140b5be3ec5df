/**
 * @module
 * Child process for test/startup/deferred-modules.test.ts: builds the app as a start does (config,
 * database, migrations, services, app), answers one `GET /health`, and prints the modules loaded
 * so far as one JSON line; with `--register` it then registers a user, with `--openapi` it fetches
 * the OpenAPI document and the docs page, and prints them again after each.
 */
import { buildTestApp, send } from "./app";

const current = buildTestApp();
const loaded = () => Object.keys(require.cache);
const health = await send(current, "/health");
process.stdout.write(`${JSON.stringify({ health: health.status, modules: loaded() })}\n`);
if (process.argv.includes("--register")) {
  const response = await send(current, "/api/auth/register", {
    method: "POST",
    body: { email: "first@example.com", password: "violet-Harbor-quantum-73!" },
  });
  process.stdout.write(`${JSON.stringify({ register: response.status, modules: loaded() })}\n`);
}
if (process.argv.includes("--openapi")) {
  const document = await send(current, "/openapi.json");
  const paths = Object.keys(((await document.json()) as { paths: object }).paths).length;
  const docs = await send(current, "/docs");
  process.stdout.write(
    `${JSON.stringify({ openapi: document.status, paths, docs: docs.status, modules: loaded() })}\n`,
  );
}
current.close();
