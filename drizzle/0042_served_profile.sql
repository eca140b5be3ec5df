CREATE TABLE `served_profile` (
	`id` integer PRIMARY KEY NOT NULL,
	`profile` text NOT NULL,
	`served_at` integer NOT NULL,
	CONSTRAINT "served_profile_one_row" CHECK("served_profile"."id" = 1)
);
