/**
 * `bun run openapi:lint`: lints the OpenAPI document the app serves with Redocly's recommended
 * rules, warnings counted as errors (redocly.yaml). The document is built offline: the app on a
 * temporary database answers `GET /openapi.json` in process, the result goes to a temporary file,
 * and `redocly lint` reads that file, run by Bun (telemetry and update checks off: no network).
 * Exit 0 only with zero problems. `--out PATH` also keeps the document.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildTestApp, tempDir } from "../test/support/app";

const ROOT = join(import.meta.dir, "..");

export async function openapiDocument(): Promise<string> {
  const target = buildTestApp({ env: { LOG_LEVEL: "silent" } });
  try {
    const response = await target.app.handle(new Request("http://localhost/openapi.json"));
    if (response.status !== 200) throw new Error(`GET /openapi.json answered ${response.status}`);
    return `${JSON.stringify(await response.json(), null, 2)}\n`;
  } finally {
    target.close();
  }
}

if (import.meta.main) {
  const outIndex = process.argv.indexOf("--out");
  const dir = tempDir("palisade-openapi-");
  const path = outIndex > 0 ? process.argv[outIndex + 1]! : join(dir.path, "openapi.json");
  try {
    writeFileSync(path, await openapiDocument());
    const lint = Bun.spawn(
      [
        process.execPath,
        join(ROOT, "node_modules", "@redocly", "cli", "bin", "cli.js"),
        "lint",
        "--config",
        join(ROOT, "redocly.yaml"),
        path,
      ],
      {
        cwd: ROOT,
        env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
        stdout: "inherit",
        stderr: "inherit",
      },
    );
    process.exitCode = await lint.exited;
  } finally {
    dir.remove();
  }
}
