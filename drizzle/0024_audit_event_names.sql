CREATE TABLE `audit_event_names` (
	`name` text NOT NULL,
	`event_id` integer NOT NULL,
	PRIMARY KEY(`name`, `event_id`)
);
--> statement-breakpoint
CREATE INDEX `audit_event_names_event` ON `audit_event_names` (`event_id`);