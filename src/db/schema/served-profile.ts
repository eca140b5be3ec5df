import { sql } from "drizzle-orm";
import { check, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * The profile (`APP_ENV`) the service last served this file with, one row: an operator command
 * run without `APP_ENV` reads it, so that it does not apply the development profile's rules (its
 * password policy, test-mode keys) to a production file unsaid (probe 86d F3; db/served-profile.ts).
 */
export const servedProfile = sqliteTable(
  "served_profile",
  {
    id: integer("id").primaryKey(),
    profile: text("profile").notNull(),
    servedAt: integer("served_at").notNull(),
  },
  (table) => [check("served_profile_one_row", sql`${table.id} = 1`)],
);
