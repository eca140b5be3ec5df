/**
 * @module
 * A development process given no AUDIT_SECRET_KEY keeps its key beside the database
 * (`DATABASE_PATH.audit-key`), making it when missing. Made beside a file whose audit log was
 * written with another key (a production file run without APP_ENV, a file copied without its key
 * file), it is not the log's key: the process is refused on it anyway, and the key left there was
 * read by every later command and development start, each refused with advice to restore the file
 * (probe 92g F3, 93a F3). So the file is looked at first, writing nothing.
 */
import { existsSync, statSync } from "node:fs";
import { developmentKeyPath } from "../../config/development-key";
import { withALook } from "../../db/file-look";
import { hasAuditKeyColumn, holdsKeyedRows } from "./key-match";

/**
 * Why no key may be made beside the file at `path`: its log is keyed (`keyed`), or the file holds
 * something a look cannot read to tell (`unreadable`: a hot journal beside it, a lock held past the
 * wait); null when a key may be made (no file yet, an empty one, a log with no keyed row, or the
 * key file is there).
 */
export function keyFileMissingFor(path: string): "keyed" | "unreadable" | null {
  const keyFile = developmentKeyPath(path);
  if (keyFile === null || existsSync(keyFile)) return null;
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    return null;
  }
  if (size === 0) return null;
  let keyed: boolean | null;
  try {
    keyed = withALook(path, (look) => hasAuditKeyColumn(look) && holdsKeyedRows(look));
  } catch {
    keyed = null;
  }
  if (keyed === null) return "unreadable";
  return keyed ? "keyed" : null;
}

/** The refusal's text, after the variable's name (ConfigError). */
export function keyFileMissingMessage(why: "keyed" | "unreadable", keyFile: string): string {
  const log =
    why === "keyed"
      ? "while its audit log is keyed"
      : "and the file cannot be read here to tell whether its audit log is keyed (a journal beside it that a read cannot apply, or a lock held)";
  return `is not set, and no development key file is beside the database (${keyFile}) ${log}: set AUDIT_SECRET_KEY to the service's key (and APP_ENV to its profile), or copy the key file the log was written with there (a backup's PATH.audit-key)`;
}
