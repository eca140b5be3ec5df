CREATE TABLE `refresh_families` (
	`id` text PRIMARY KEY NOT NULL,
	`user_id` text NOT NULL,
	`created_at` integer NOT NULL,
	`expires_at` integer NOT NULL,
	`revoked_at` integer,
	FOREIGN KEY (`user_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `refresh_families_user` ON `refresh_families` (`user_id`);--> statement-breakpoint
CREATE INDEX `refresh_families_expires` ON `refresh_families` (`expires_at`);--> statement-breakpoint
-- Backfill: every family that still has refresh tokens. A family any of whose tokens was revoked is
-- revoked as a whole (a token inserted after a revocation is exactly what this table closes).
INSERT INTO `refresh_families` (`id`, `user_id`, `created_at`, `expires_at`, `revoked_at`)
SELECT `family_id`, min(`user_id`), min(`created_at`), max(`expires_at`), max(`revoked_at`)
FROM `refresh_tokens` GROUP BY `family_id`;--> statement-breakpoint
UPDATE `refresh_families` SET `revoked_at` = (
	SELECT min(`created_at`) FROM `auth_revocations`
	WHERE `kind` = 'family' AND `subject` = `refresh_families`.`id`
) WHERE `revoked_at` IS NULL AND `id` IN (
	SELECT `subject` FROM `auth_revocations` WHERE `kind` = 'family'
);
