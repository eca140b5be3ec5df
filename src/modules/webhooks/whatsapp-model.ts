/**
 * @module
 * The WhatsApp Cloud API webhook payload, read strictly but tolerantly: the envelope (`object`
 * and an `entry` array) must have the documented shape, fields we do not use are ignored, and each
 * entry, change, message or status is checked on its own: one that is unusable (a field of the
 * wrong type or past its bound, a number that is not digits) is skipped and counted, and the rest
 * of the delivery is accepted. Failing the whole delivery would make Meta retry it for days, and
 * skipping the whole change (as an earlier version did) lost the good messages beside a bad one,
 * after a 200. The arrays have no count of their own: the body (at most 256 KiB) bounds them, and
 * Meta batches up to 1000 updates in one delivery.
 *
 * Shape (Meta, "Webhooks payload reference"):
 *   { object: "whatsapp_business_account",
 *     entry: [{ id, changes: [{ field: "messages",
 *       value: { metadata: { phone_number_id }, messages?: [{ id, from, type, text?: { body } }],
 *                statuses?: [{ id, status, timestamp, errors?: [{ code }] }] } }] }] }
 */

import { TypeCompiler } from "@sinclair/typebox/compiler";
import { type Static, t } from "elysia";
import { JsonInteger } from "../../plugins/openapi/json-integer";
import { checkChatMessage } from "../chat/message";

/** WhatsApp ids (wamid.…) are base64 text well under this. */
const ID = t.String({ minLength: 1, maxLength: 256 });

const InboundMessage = t.Object({
  id: ID,
  from: t.String({ maxLength: 32 }),
  type: t.String({ maxLength: 32 }),
  timestamp: t.Optional(t.String({ maxLength: 20 })),
  text: t.Optional(t.Object({ body: t.String({ maxLength: 65_536 }) })),
});

const StatusUpdate = t.Object({
  id: ID,
  status: t.String({ maxLength: 32 }),
  timestamp: t.Optional(t.String({ maxLength: 20 })),
  errors: t.Optional(t.Array(t.Object({ code: t.Optional(t.Number()) }))),
});

const Entry = t.Object({
  id: t.Optional(t.String({ maxLength: 64 })),
  changes: t.Array(t.Unknown()),
});

const Change = t.Object({ field: t.String({ maxLength: 64 }), value: t.Optional(t.Unknown()) });

const ChangeValue = t.Object({
  metadata: t.Optional(t.Object({ phone_number_id: t.String({ maxLength: 64 }) })),
  messages: t.Optional(t.Array(t.Unknown())),
  statuses: t.Optional(t.Array(t.Unknown())),
});

/** The envelope; `additionalProperties` stays open everywhere so new Meta fields are ignored. */
export const WhatsAppNotification = t.Object({
  object: t.String({ maxLength: 64 }),
  entry: t.Array(t.Unknown()),
});
export type WhatsAppNotification = Static<typeof WhatsAppNotification>;

// Compiled once: the checks hold no state.
const isEntry = TypeCompiler.Compile(Entry);
const isChange = TypeCompiler.Compile(Change);
const isChangeValue = TypeCompiler.Compile(ChangeValue);
const isInboundMessage = TypeCompiler.Compile(InboundMessage);
const isStatusUpdate = TypeCompiler.Compile(StatusUpdate);

/** Our answer to a verified delivery (Meta reads only the 200). */
export const WebhookAck = t.Object({
  received: t.Literal(true),
  /** Messages accepted into the outbox by this delivery. */
  accepted: JsonInteger(),
  /** Messages already seen (a redelivery). */
  duplicates: JsonInteger(),
  /** Status callbacks recorded. */
  statuses: JsonInteger(),
  /** Items not acted on: other fields, unusable items, senders over their limit. */
  ignored: JsonInteger(),
});

export const DELIVERY_STATUSES = ["sent", "delivered", "read", "failed"] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/**
 * An inbound message we will answer: a text for chat, a text the chat message rules refuse (a
 * fixed notice), or anything else (another fixed notice).
 */
export interface InboundItem {
  messageId: string;
  phoneNumberId: string;
  from: string;
  kind: "text" | "refused" | "unsupported";
  /** The text as chat receives it (trimmed), or null for `refused` and `unsupported`. */
  text: string | null;
  type: string;
  /** When the sender sent it (Meta's `timestamp`, in ms), or null when it carries none. */
  sentAt: number | null;
}

export interface StatusItem {
  messageId: string;
  status: DeliveryStatus;
  at: number;
  errorCode: number | null;
}

export interface ReadNotification {
  messages: InboundItem[];
  statuses: StatusItem[];
  /** Items skipped: other fields, unknown statuses, unusable ids or numbers. */
  ignored: number;
}

/** Message types that are no question to answer: counted as ignored, no reply. */
const UNANSWERED_TYPES: ReadonlySet<string> = new Set(["reaction", "system"]);

/** Phone number ids and WhatsApp ids (numbers) are digits; they go into a URL path and a body. */
const DIGITS = /^[0-9]{1,32}$/;
/** Message ids: printable ASCII, no spaces (they are our dedupe keys and are logged). */
const MESSAGE_ID = /^[\x21-\x7e]{1,256}$/;
/**
 * A WhatsApp text as chat receives it: under exactly the rules of `POST /api/chat`
 * (`checkChatMessage`: well-formed Unicode, no control characters but newline and tab, a visible
 * character, 1 to 4000 characters after trimming), trimmed; `refused` when it fails them. A text
 * is never cleaned or cut into another message: the sender gets a fixed notice instead.
 */
export function readText(raw: string): { kind: "text"; text: string } | { kind: "refused" } {
  const check = checkChatMessage(raw);
  return check.ok ? { kind: "text", text: check.message } : { kind: "refused" };
}

function isDeliveryStatus(value: string): value is DeliveryStatus {
  return (DELIVERY_STATUSES as readonly string[]).includes(value);
}

/** Seconds since the epoch as Meta sends them (a string), in milliseconds; `fallback` if absent. */
function timestampMs<T extends number | null>(value: string | undefined, fallback: T): number | T {
  if (value === undefined || !/^[0-9]{1,12}$/.test(value)) return fallback;
  return Number(value) * 1000;
}

/**
 * The messages and statuses of a notification that passed `WhatsAppNotification`; each entry,
 * change, message and status that is not usable counts once in `ignored`.
 */
export function readNotification(
  notification: WhatsAppNotification,
  now: number,
): ReadNotification {
  const result: ReadNotification = { messages: [], statuses: [], ignored: 0 };
  for (const entry of notification.entry) {
    if (!isEntry.Check(entry)) {
      result.ignored++;
      continue;
    }
    for (const change of entry.changes) {
      if (
        !isChange.Check(change) ||
        change.field !== "messages" ||
        !isChangeValue.Check(change.value)
      ) {
        result.ignored++;
        continue;
      }
      const value = change.value;
      const phoneNumberId = value.metadata?.phone_number_id ?? "";
      for (const message of value.messages ?? []) {
        if (!isInboundMessage.Check(message)) {
          result.ignored++;
          continue;
        }
        if (!DIGITS.test(phoneNumberId) || !DIGITS.test(message.from)) {
          result.ignored++;
          continue;
        }
        if (!MESSAGE_ID.test(message.id)) {
          result.ignored++;
          continue;
        }
        // A reaction (a 👍 to the assistant's own answer, most often) and a system message (the
        // sender changed number) ask nothing: answered, each got the "please type your question"
        // notice (probe 81a). Acknowledged and left alone.
        if (UNANSWERED_TYPES.has(message.type)) {
          result.ignored++;
          continue;
        }
        const read = message.type === "text" && message.text ? readText(message.text.body) : null;
        result.messages.push({
          messageId: message.id,
          phoneNumberId,
          from: message.from,
          kind: read === null ? "unsupported" : read.kind,
          text: read?.kind === "text" ? read.text : null,
          type: message.type,
          sentAt: timestampMs(message.timestamp, null),
        });
      }
      for (const status of value.statuses ?? []) {
        if (
          !isStatusUpdate.Check(status) ||
          !MESSAGE_ID.test(status.id) ||
          !isDeliveryStatus(status.status)
        ) {
          result.ignored++;
          continue;
        }
        result.statuses.push({
          messageId: status.id,
          status: status.status,
          at: timestampMs(status.timestamp, now),
          errorCode: status.errors?.[0]?.code ?? null,
        });
      }
    }
  }
  return result;
}
