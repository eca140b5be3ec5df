ALTER TABLE `chat_conversations` ADD `seal` text;--> statement-breakpoint
ALTER TABLE `chat_messages` ADD `seal` text;--> statement-breakpoint
ALTER TABLE `chat_messages` ADD `previous_seal` text;