-- No change of shape: WhatsApp message ids (wamid.…, base64 that holds the sender's number) are
-- now stored as a keyed hash in `webhook_events`, `whatsapp_outbox` and `whatsapp_statuses`, and
-- this migration's companion (src/modules/webhooks/message-id-upgrade.ts) rewrites, in its
-- transaction, the ids the release before stored as Meta sent them. A migration runs at least one
-- statement.
SELECT 1;
