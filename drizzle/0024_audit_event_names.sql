CREATE TABLE `audit_event_names` (
	`name` text NOT NULL,
	`event_id` integer NOT NULL,
	PRIMARY KEY(`name`, `event_id`)
);
--> statement-breakpoint
CREATE INDEX `audit_event_names_event` ON `audit_event_names` (`event_id`);--> statement-breakpoint
-- Rows written since details were committed (subject_commit 'd:…') before this table existed:
-- their names, by the rule of principalsNamed (src/plugins/audit/events.ts), so erasure finds them.
INSERT OR IGNORE INTO `audit_event_names` (`name`, `event_id`)
SELECT `named`.`name`, `named`.`event_id` FROM (
	SELECT `e`.`id` AS `event_id`,
		CASE
			WHEN `j`.`value` GLOB 'user:*' OR `j`.`value` GLOB 'key:*' OR `j`.`value` GLOB 'whatsapp:*' THEN `j`.`value`
			WHEN `j`.`key` IN ('keyId', 'replacedBy') THEN 'key:' || `j`.`value`
			WHEN `j`.`key` IN ('user', 'userId') THEN 'user:' || `j`.`value`
			WHEN `j`.`key` = 'id' AND json_extract(`e`.`detail`, '$.table') = 'users' THEN 'user:' || `j`.`value`
			WHEN `j`.`key` = 'id' AND json_extract(`e`.`detail`, '$.table') = 'api_keys' THEN 'key:' || `j`.`value`
		END AS `name`
	FROM `audit_events` `e`,
		json_each(CASE WHEN json_valid(`e`.`detail`) THEN (CASE WHEN json_type(`e`.`detail`) = 'object' THEN `e`.`detail` ELSE '{}' END) ELSE '{}' END) `j`
	WHERE `e`.`subject_commit` LIKE 'd:%' AND `j`.`type` = 'text' AND `j`.`value` <> ''
) `named` WHERE `named`.`name` IS NOT NULL;
