ALTER TABLE `api_keys` ADD `seal` text;--> statement-breakpoint
ALTER TABLE `refresh_families` ADD `seal` text;--> statement-breakpoint
ALTER TABLE `refresh_tokens` ADD `seal` text;--> statement-breakpoint
ALTER TABLE `users` ADD `seal` text;