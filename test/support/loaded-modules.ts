/**
 * @module
 * Child process for test/startup/deferred-modules.test.ts: builds the app as a start does (config,
 * database, migrations, services, app), answers one `GET /health`, and prints the modules loaded
 * so far as one JSON line; with `--register` it then registers a user and prints them again.
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
current.close();
