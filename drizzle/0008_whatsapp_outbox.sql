CREATE TABLE `whatsapp_outbox` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`message_id` text NOT NULL,
	`phone_number_id` text NOT NULL,
	`recipient` text,
	`sender_hash` text NOT NULL,
	`kind` text NOT NULL,
	`body` text,
	`reply` text,
	`conversation_id` text,
	`state` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`next_attempt_at` integer NOT NULL,
	`lease_until` integer,
	`lease_owner` text,
	`reply_message_id` text,
	`last_error` text,
	`received_at` integer NOT NULL,
	`finished_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `whatsapp_outbox_message_id_unique` ON `whatsapp_outbox` (`message_id`);--> statement-breakpoint
CREATE INDEX `whatsapp_outbox_due` ON `whatsapp_outbox` (`next_attempt_at`) WHERE "whatsapp_outbox"."state" = 'pending';--> statement-breakpoint
CREATE INDEX `whatsapp_outbox_sender` ON `whatsapp_outbox` (`sender_hash`,`id`);--> statement-breakpoint
CREATE INDEX `whatsapp_outbox_reply` ON `whatsapp_outbox` (`reply_message_id`);--> statement-breakpoint
CREATE INDEX `whatsapp_outbox_finished` ON `whatsapp_outbox` (`finished_at`);--> statement-breakpoint
CREATE TABLE `whatsapp_statuses` (
	`message_id` text NOT NULL,
	`status` text NOT NULL,
	`at` integer NOT NULL,
	`error_code` integer,
	`received_at` integer NOT NULL,
	PRIMARY KEY(`message_id`, `status`)
);
--> statement-breakpoint
CREATE INDEX `whatsapp_statuses_received_at` ON `whatsapp_statuses` (`received_at`);