ALTER TABLE `api_keys` ADD `lineage` text;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `lineage_seal` text;