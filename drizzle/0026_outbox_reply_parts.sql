-- A reply longer than Graph takes in one message goes out in parts (modules/webhooks/reply-parts.ts):
-- the parts Graph has accepted, so that a retry sends the rest and never a part again.
ALTER TABLE `whatsapp_outbox` ADD `reply_parts_sent` integer DEFAULT 0 NOT NULL;
