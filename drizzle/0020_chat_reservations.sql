CREATE TABLE `chat_holders` (
	`holder` text PRIMARY KEY NOT NULL,
	`seen_at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `chat_reservations` (
	`id` integer PRIMARY KEY NOT NULL,
	`owner_kind` text NOT NULL,
	`owner_id` text NOT NULL,
	`day` text NOT NULL,
	`tokens` integer NOT NULL,
	`holder` text NOT NULL,
	`created_at` integer NOT NULL,
	CONSTRAINT "chat_reservations_tokens_counted" CHECK(typeof("chat_reservations"."tokens") = 'integer' AND "chat_reservations"."tokens" >= 0)
);
--> statement-breakpoint
ALTER TABLE `chat_usage` DROP COLUMN `resets`;