/**
 * The secrets recipe compose.yaml's header gives, run as a user would paste it (under the usual
 * umask 022): Palisade's own secrets come out readable by their owner only, as the README's recipe
 * makes them, so the start has no loose file to warn about among them (probe 82a F5: compose's
 * recipe wrote all four 0644).
 */
import { expect, test } from "bun:test";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { looseSecretFiles } from "../src/config/secret-file-modes";
import { tempDir } from "./support/app";

const REPO_ROOT = join(import.meta.dir, "..");

function composeRecipe(): string {
  const header = readFileSync(join(REPO_ROOT, "compose.yaml"), "utf8").split("\n");
  const from = header.findIndex((line) => line.includes("Create the secrets first"));
  const lines: string[] = [];
  for (const line of header.slice(from + 1)) {
    if (!line.startsWith("#   ")) {
      if (lines.length > 0) break;
      continue;
    }
    lines.push(line.slice(4));
  }
  return lines.join("\n");
}

// The recipe runs openssl, as the user's shell would; .ci/apt-packages installs it on CI.
test.skipIf(Bun.which("openssl") === null)(
  "compose.yaml's secrets recipe makes Palisade's own secrets 0600, as the README's does",
  () => {
    const recipe = composeRecipe();
    expect(recipe).toContain("openssl rand");
    const dir = tempDir();
    try {
      const ran = Bun.spawnSync(["bash", "-c", `umask 022\n${recipe}`], { cwd: dir.path });
      expect(ran.exitCode).toBe(0);
      const secrets = join(dir.path, "secrets");
      for (const name of ["jwt_secret_key", "csrf_secret_key", "audit_secret_key"]) {
        expect({ name, mode: statSync(join(secrets, name)).mode & 0o777 }).toEqual({
          name,
          mode: 0o600,
        });
      }
      const loose = looseSecretFiles({
        JWT_SECRET_KEY_FILE: join(secrets, "jwt_secret_key"),
        CSRF_SECRET_KEY_FILE: join(secrets, "csrf_secret_key"),
        AUDIT_SECRET_KEY_FILE: join(secrets, "audit_secret_key"),
      });
      expect(loose).toEqual([]);
    } finally {
      dir.remove();
    }
  },
);
