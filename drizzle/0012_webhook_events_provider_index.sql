DROP INDEX `webhook_events_received_at`;--> statement-breakpoint
CREATE INDEX `webhook_events_provider_received_at` ON `webhook_events` (`provider`,`received_at`);