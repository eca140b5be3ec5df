/**
 * @module
 * `bun run dashboards`: writes grafana/dashboards/*.json, grafana/alerts.yml and the example
 * grafana/alertmanager.yml from the TypeScript beside this file (and alerts:config's renderer). `generatedFiles()` is what the staleness test compares with the
 * committed files.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  EXAMPLE_ALERTMANAGER_SETTINGS,
  renderAlertmanagerConfig,
} from "../../src/cli/commands/alerts";
import { renderAlertRules } from "./alerts";
import { DASHBOARDS, renderDashboard } from "./dashboards";

export const GRAFANA_DIR = join(import.meta.dir, "..");

/** Every generated file, by path relative to grafana/, with its text. */
export function generatedFiles(): Map<string, string> {
  const files = new Map<string, string>();
  for (const spec of DASHBOARDS) files.set(`dashboards/${spec.file}`, renderDashboard(spec));
  files.set("alerts.yml", renderAlertRules());
  files.set("alertmanager.yml", renderAlertmanagerConfig(EXAMPLE_ALERTMANAGER_SETTINGS));
  return files;
}

if (import.meta.main) {
  for (const [path, text] of generatedFiles()) {
    writeFileSync(join(GRAFANA_DIR, path), text);
    console.log(`wrote grafana/${path}`);
  }
}
