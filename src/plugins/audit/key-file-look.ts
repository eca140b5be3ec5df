/**
 * @module
 * A development process given no AUDIT_SECRET_KEY keeps its key beside the database
 * (`DATABASE_PATH.audit-key`), making it when missing. Made beside a file whose audit log was
 * written with another key (a production file run without APP_ENV, a file copied without its key
 * file), it is not the log's key: the process is refused on it anyway, and the key left there was
 * read by every later command and development start, each refused with advice to restore the file
 * (probe 92g F3, 93a F3). So the file is looked at first, writing nothing.
 */
import { statSync } from "node:fs";
import { ConfigError } from "../../config";
import { BUSY_TIMEOUT_MS } from "../../db/client";
import { withALook } from "../../db/file-look";
import { hasAuditKeyColumn, holdsKeyedRows } from "./key-match";

/**
 * Why no key may be made beside the file at `path`: its log is keyed (`keyed`), or the file holds
 * something a look cannot read to tell (`unreadable`: a hot journal beside it, a lock held past the
 * wait); null when a key may be made (no file yet, an empty one, a log with no keyed row).
 */
function keyFileMissingFor(path: string): "keyed" | "unreadable" | null {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    return null;
  }
  if (size === 0) return null;
  let keyed: boolean | null;
  try {
    keyed = withALook(
      path,
      BUSY_TIMEOUT_MS,
      (look) => hasAuditKeyColumn(look) && holdsKeyedRows(look),
    );
  } catch {
    keyed = null;
  }
  if (keyed === null) return "unreadable";
  return keyed ? "keyed" : null;
}

/**
 * loadConfig's `beforeMakingDevelopmentKey`, for the start and every CLI command alike: refuses
 * (ConfigError naming AUDIT_SECRET_KEY) to make a key beside a file whose audit log is keyed, or
 * cannot be read to tell.
 */
export function refuseKeyBesideKeyedLog(databasePath: string, keyFile: string): void {
  const why = keyFileMissingFor(databasePath);
  if (why === null) return;
  const log =
    why === "keyed"
      ? "while its audit log is keyed"
      : "and the file cannot be read here to tell whether its audit log is keyed (a journal beside it that a read cannot apply, or a lock held)";
  throw new ConfigError(
    "AUDIT_SECRET_KEY",
    `is not set, and no development key file is beside the database (${keyFile}) ${log}: set AUDIT_SECRET_KEY to the service's key (and APP_ENV to its profile), or copy the key file the log was written with there (a backup's PATH.audit-key)`,
  );
}
