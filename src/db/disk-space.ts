/**
 * @module
 * Room left for the database. SQLite reports a full disk only when a write fails (SQLITE_FULL),
 * and a write probe that writes nothing cannot see it coming; the filesystem can. `/ready` fails
 * while less than MIN_FREE_BYTES remain where the database lives: room for the WAL to reach
 * WAL_TRUNCATE_MB's default before a checkpoint, and for the operator to act before writes fail.
 */
import { statfsSync } from "node:fs";
import { dirname } from "node:path";

export const MIN_FREE_BYTES = 64 * 1024 * 1024;

/** Bytes this process's user may still write on the filesystem holding `directory`. */
export function freeBytesAt(directory: string): number {
  const stats = statfsSync(directory);
  return stats.bavail * stats.bsize;
}

/** Throws naming the room left when the database's filesystem is nearly full. */
export function checkDiskRoom(
  databasePath: string,
  freeBytes: (directory: string) => number = freeBytesAt,
): void {
  if (databasePath === "" || databasePath === ":memory:") return;
  const free = freeBytes(dirname(databasePath));
  if (free < MIN_FREE_BYTES) {
    const mib = (bytes: number) => `${Math.floor(bytes / (1024 * 1024))} MB`;
    throw new Error(
      `disk nearly full: ${mib(free)} free where the database lives, under ${mib(MIN_FREE_BYTES)}`,
    );
  }
}

/** Below this much room, a write that failed failed for it. */
export const FULL_BELOW_BYTES = 1024 * 1024;

/**
 * The filesystem holding `directory`, said full, when a SQLite failure (`sqliteCode`) was its being
 * full; null otherwise. SQLite calls a `-wal` or `-shm` it cannot grow a "disk I/O error"
 * (SQLITE_IOERR), which read as a damaged database: a start on a full disk was told its healthy
 * database "is not a usable SQLite database" (probe 83c F6), and a backup into a full directory was
 * told it could not read the database (F7).
 */
export function fullFilesystem(
  sqliteCode: string,
  directory: string,
  room: (directory: string) => { bytes: number; files: number } = roomAt,
): string | null {
  // A file that cannot be made (the -wal, the -shm, a copy) for want of an inode is CANTOPEN.
  if (!/^SQLITE_(FULL|IOERR|CANTOPEN)/.test(sqliteCode)) return null;
  let left: { bytes: number; files: number };
  try {
    left = room(directory);
  } catch {
    return null;
  }
  if (left.bytes < FULL_BELOW_BYTES) {
    return `the filesystem that holds ${directory} is full (${Math.floor(left.bytes / 1024)} KB free)`;
  }
  // Out of inodes with bytes to spare (probe 83e F3: "unable to open database file" was called an
  // unusable database).
  if (left.files === 0) {
    return `the filesystem that holds ${directory} has no room for another file (no free inodes)`;
  }
  return null;
}

/** Bytes this process's user may still write, and files it may still make, where `directory` is. */
export function roomAt(directory: string): { bytes: number; files: number } {
  const stats = statfsSync(directory);
  return { bytes: stats.bavail * stats.bsize, files: stats.ffree };
}
