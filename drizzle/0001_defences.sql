CREATE TABLE `audit_checkpoints` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`created_at` integer NOT NULL,
	`last_deleted_id` integer NOT NULL,
	`last_hash` text NOT NULL,
	`deleted_count` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `audit_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`at` integer NOT NULL,
	`type` text NOT NULL,
	`actor` text,
	`ip` text,
	`route` text,
	`request_id` text,
	`outcome` text NOT NULL,
	`detail` text NOT NULL,
	`subject_salt` text,
	`subject_commit` text NOT NULL,
	`prev_hash` text NOT NULL,
	`hash` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `audit_events_at` ON `audit_events` (`at`);--> statement-breakpoint
CREATE INDEX `audit_events_type_at` ON `audit_events` (`type`,`at`);--> statement-breakpoint
CREATE INDEX `audit_events_actor` ON `audit_events` (`actor`);--> statement-breakpoint
CREATE TABLE `ip_blocks` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`address` text NOT NULL,
	`reason` text NOT NULL,
	`source` text NOT NULL,
	`created_by` text,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`lifted_at` integer
);
--> statement-breakpoint
CREATE INDEX `ip_blocks_address` ON `ip_blocks` (`address`,`created_at`);--> statement-breakpoint
CREATE INDEX `ip_blocks_expires` ON `ip_blocks` (`expires_at`);--> statement-breakpoint
CREATE TABLE `rate_limit_counters` (
	`policy` text NOT NULL,
	`key` text NOT NULL,
	`window_start` integer NOT NULL,
	`current` integer NOT NULL,
	`previous` integer NOT NULL,
	`burst_window_start` integer NOT NULL,
	`burst_current` integer NOT NULL,
	`burst_previous` integer NOT NULL,
	`admitted` integer NOT NULL,
	`expires_at` integer NOT NULL,
	PRIMARY KEY(`policy`, `key`)
);
--> statement-breakpoint
CREATE INDEX `rate_limit_counters_expires` ON `rate_limit_counters` (`expires_at`);