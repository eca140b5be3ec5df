import { sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
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
    ...timestamps,
  },
  (table) => [uniqueIndex("users_email_key_unique").on(table.emailKey)],
);
