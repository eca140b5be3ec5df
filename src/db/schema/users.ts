import { sql } from "drizzle-orm";
import { index, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
import { timestamps } from "./columns";

export const USER_ROLES = ["user", "admin"] as const;

export const users = sqliteTable(
  "users",
  {
    id: text("id").primaryKey(),
    /** Normalised before it is stored (NFKC, IDNA domain; see modules/auth/email.ts), as typed otherwise. */
    email: text("email").notNull(),
    /**
     * The normalised, case-folded address: what uniqueness and every lookup by email compare. Null
     * only for a row stored before normalisation whose address another account already holds (set
     * aside at start; see reconcileEmailKeys).
     */
    emailKey: text("email_key"),
    passwordHash: text("password_hash").notNull(),
    role: text("role", { enum: USER_ROLES }).notNull().default("user"),
    /** HMAC of id, password hash and role (plugins/auth/seal.ts): a row without a match is refused. */
    seal: text("seal"),
    /**
     * How a reader takes the address (modules/auth/readings.ts): its key with look-alike letters
     * read as the Latin ones they copy, behind the version of that reading. A new address whose
     * reading an account holds is taken, whichever of the two was registered first. Derived from
     * `email`, so not sealed: changed in the file it can only hide or claim a reading.
     */
    reading: text("reading"),
    ...timestamps,
  },
  (table) => [
    uniqueIndex("users_email_key_unique").on(table.emailKey),
    index("users_reading").on(table.reading),
    /**
     * The keys an earlier release folded once, which a second fold changes (`ß`, from the capital
     * `ẞ`; email.ts `foldCase`): found at start without reading every row, and folded again.
     */
    index("users_key_folds_again").on(table.id).where(sql`instr(${table.emailKey}, 'ß') > 0`),
  ],
);
