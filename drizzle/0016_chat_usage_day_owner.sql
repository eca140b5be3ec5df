DROP INDEX IF EXISTS `chat_usage_day`;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS `chat_usage_day_owner` ON `chat_usage` (`day`,`owner_kind`,`owner_id`);
