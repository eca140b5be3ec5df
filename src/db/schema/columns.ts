import { integer } from "drizzle-orm/sqlite-core";

/** Creation and update times in milliseconds since the epoch, shared by every table that has them. */
export const timestamps = {
  createdAt: integer("created_at", { mode: "timestamp_ms" }).notNull(),
  updatedAt: integer("updated_at", { mode: "timestamp_ms" }).notNull(),
};
