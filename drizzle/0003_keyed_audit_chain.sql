ALTER TABLE `audit_checkpoints` ADD `key_id` text;--> statement-breakpoint
ALTER TABLE `audit_checkpoints` ADD `mac` text;--> statement-breakpoint
ALTER TABLE `audit_events` ADD `key_id` text;--> statement-breakpoint
ALTER TABLE `audit_events` ADD `erasure_mac` text;