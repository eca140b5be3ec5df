DROP INDEX `users_email_unique`;--> statement-breakpoint
ALTER TABLE `users` ADD `email_key` text;--> statement-breakpoint
CREATE UNIQUE INDEX `users_email_key_unique` ON `users` (`email_key`);--> statement-breakpoint
ALTER TABLE `api_keys` ADD `origin` text DEFAULT 'api' NOT NULL;--> statement-breakpoint
-- Keys stored from API_KEYS before this migration: ownerless and named bootstrap-N by that code.
UPDATE `api_keys` SET `origin` = 'bootstrap' WHERE `user_id` IS NULL AND `name` LIKE 'bootstrap-%';
