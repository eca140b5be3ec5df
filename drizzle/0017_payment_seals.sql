ALTER TABLE `payment_idempotency_keys` ADD `seal` text;--> statement-breakpoint
ALTER TABLE `payments` ADD `seal` text;