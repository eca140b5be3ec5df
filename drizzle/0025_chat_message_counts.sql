ALTER TABLE `chat_conversations` ADD `message_count` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
-- The conversations stored before this column: their messages counted once, here. From now on
-- the turn that stores messages and the retention that deletes them keep it (modules/chat/service.ts).
UPDATE `chat_conversations` SET `message_count` = (
	SELECT count(*) FROM `chat_messages` WHERE `chat_messages`.`conversation_id` = `chat_conversations`.`id`
);
