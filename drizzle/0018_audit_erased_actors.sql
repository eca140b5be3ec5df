CREATE TABLE `audit_erased_actors` (
	`actor_key` text PRIMARY KEY NOT NULL,
	`pseudonym` text NOT NULL,
	`erased_at` integer NOT NULL,
	`mac` text NOT NULL
);
