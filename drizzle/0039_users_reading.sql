ALTER TABLE `users` ADD `reading` text;--> statement-breakpoint
CREATE INDEX `users_reading` ON `users` (`reading`);