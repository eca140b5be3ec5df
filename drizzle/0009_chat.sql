CREATE TABLE `chat_conversations` (
	`id` text PRIMARY KEY NOT NULL,
	`owner_kind` text NOT NULL,
	`owner_id` text NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL
);
--> statement-breakpoint
CREATE INDEX `chat_conversations_owner` ON `chat_conversations` (`owner_kind`,`owner_id`,`created_at`,`id`);--> statement-breakpoint
CREATE INDEX `chat_conversations_updated` ON `chat_conversations` (`updated_at`);--> statement-breakpoint
CREATE TABLE `chat_messages` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`conversation_id` text NOT NULL,
	`role` text NOT NULL,
	`content` text NOT NULL,
	`incomplete` integer DEFAULT false NOT NULL,
	`tokens` integer NOT NULL,
	`prompt_tokens` integer,
	`completion_tokens` integer,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`conversation_id`) REFERENCES `chat_conversations`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `chat_messages_conversation` ON `chat_messages` (`conversation_id`,`id`);--> statement-breakpoint
CREATE INDEX `chat_messages_created` ON `chat_messages` (`created_at`);--> statement-breakpoint
CREATE TABLE `chat_usage` (
	`owner_kind` text NOT NULL,
	`owner_id` text NOT NULL,
	`day` text NOT NULL,
	`used_tokens` integer DEFAULT 0 NOT NULL,
	`reserved_tokens` integer DEFAULT 0 NOT NULL,
	`requests` integer DEFAULT 0 NOT NULL,
	`updated_at` integer NOT NULL,
	PRIMARY KEY(`owner_kind`, `owner_id`, `day`),
	CONSTRAINT "chat_usage_reserved_nonnegative" CHECK("chat_usage"."reserved_tokens" >= 0)
);
--> statement-breakpoint
CREATE INDEX `chat_usage_day` ON `chat_usage` (`day`);