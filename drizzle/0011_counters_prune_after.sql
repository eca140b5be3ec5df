DROP INDEX `rate_limit_counters_expires`;--> statement-breakpoint
ALTER TABLE `rate_limit_counters` ADD `prune_after` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX `rate_limit_counters_prune` ON `rate_limit_counters` (`prune_after`);