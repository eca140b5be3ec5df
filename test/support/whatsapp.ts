/**
 * WhatsApp webhook helpers: Cloud API notification payloads as Meta sends them, signed with Node's
 * HMAC as Meta signs them, delivered through the real app; and a deterministic ChatTurns that
 * records every turn it is asked for.
 */
import { createHmac } from "node:crypto";
import type { ChatTurnInput, ChatTurnOutcome, ChatTurns } from "../../src/modules/chat/contract";
import { UpstreamFailure } from "../../src/modules/chat/providers/provider";
import { messageIdKeyer } from "../../src/modules/webhooks/whatsapp-crypto";
import { fromPeer } from "./app";
import type { GraphServer } from "./graph-server";

export const WA_APP_SECRET = "test-whatsapp-app-secret-0123456789";
export const WA_PREVIOUS_SECRET = "test-whatsapp-previous-secret-98765";
export const WA_VERIFY_TOKEN = "test-verify-token-abc";
export const WA_PHONE_NUMBER_ID = "106540352242922";
export const WHATSAPP_PATH = "/webhooks/whatsapp";

/** The variables that turn the webhook on, pointed at a local Graph server. */
export function whatsappEnv(graph: GraphServer | null, extra: Record<string, string> = {}) {
  return {
    WHATSAPP_APP_SECRET: WA_APP_SECRET,
    WHATSAPP_VERIFY_TOKEN: WA_VERIFY_TOKEN,
    ...(graph ? { WHATSAPP_ACCESS_TOKEN: graph.token, WHATSAPP_API_URL: graph.url } : {}),
    ...extra,
  };
}

export interface InboundMessage {
  id: string;
  from: string;
  type?: string;
  text?: string;
}

export interface StatusCallback {
  id: string;
  status: string;
  recipient?: string;
  errorCode?: number;
}

/** A notification as Meta sends it (one entry, one `messages` change). */
export function notification(
  items: { messages?: InboundMessage[]; statuses?: StatusCallback[] },
  phoneNumberId = WA_PHONE_NUMBER_ID,
) {
  const timestamp = String(Math.floor(Date.now() / 1000));
  for (const item of [...(items.messages ?? []), ...(items.statuses ?? [])]) idsSent.add(item.id);
  const value: Record<string, unknown> = {
    messaging_product: "whatsapp",
    metadata: { display_phone_number: "15550783881", phone_number_id: phoneNumberId },
  };
  if (items.messages) {
    value.contacts = items.messages.map((m) => ({ profile: { name: "Kerry" }, wa_id: m.from }));
    value.messages = items.messages.map((m) => {
      const type = m.type ?? "text";
      const message: Record<string, unknown> = { from: m.from, id: m.id, timestamp, type };
      if (type === "text") message.text = { body: m.text ?? "hello" };
      else message[type] = { mime_type: "image/jpeg", sha256: "abc", id: "1234" };
      return message;
    });
  }
  if (items.statuses) {
    value.statuses = items.statuses.map((s) => ({
      id: s.id,
      status: s.status,
      timestamp,
      recipient_id: s.recipient ?? "16505551234",
      ...(s.errorCode ? { errors: [{ code: s.errorCode, title: "failed" }] } : {}),
    }));
  }
  return {
    object: "whatsapp_business_account",
    entry: [{ id: "102290129340398", changes: [{ value, field: "messages" }] }],
  };
}

export function sign(body: string | Uint8Array, secret = WA_APP_SECRET): string {
  return `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`;
}

/** POSTs a notification signed with `secret` (or with the `signature` header given as is). */
export async function deliver(
  target: { app: { handle(request: Request): Promise<Response> } } | URL,
  payload: unknown,
  options: { secret?: string; signature?: string | null; peer?: string } = {},
): Promise<Response> {
  const body = typeof payload === "string" ? payload : JSON.stringify(payload);
  const headers = new Headers({ "content-type": "application/json" });
  const signature =
    options.signature === undefined ? sign(body, options.secret) : options.signature;
  if (signature !== null) headers.set("x-hub-signature-256", signature);
  if (target instanceof URL) {
    return fetch(new URL(WHATSAPP_PATH, target), { method: "POST", headers, body });
  }
  const request = new Request(`http://localhost${WHATSAPP_PATH}`, {
    method: "POST",
    headers,
    body,
  });
  return target.app.handle(options.peer ? fromPeer(request, options.peer) : request);
}

/** A ChatTurns that answers deterministically and records each turn it ran. */
export class ScriptedChat implements ChatTurns {
  readonly turns: ChatTurnInput[] = [];
  /** Outcomes (or failures) for the next turns, before the normal replies resume. */
  readonly script: (ChatTurnOutcome | Error)[] = [];
  /** Each turn waits this long (aborted by the input's signal). */
  delayMs = 0;
  /**
   * The wait ignores the signal: a turn the abort came too late for (the real service, once the
   * upstream has answered, stores the turn whatever the signal says).
   */
  completesDespiteAbort = false;
  private conversations = 0;

  async converse(input: ChatTurnInput): Promise<ChatTurnOutcome> {
    this.turns.push(input);
    if (this.delayMs > 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, this.delayMs);
        input.signal?.addEventListener("abort", () => {
          if (this.completesDespiteAbort) return;
          clearTimeout(timer);
          reject(new UpstreamFailure("unavailable", "aborted"));
        });
      });
    }
    const next = this.script.shift();
    if (next instanceof Error) throw next;
    if (next) return next;
    const conversationId = input.conversationId ?? `conv-${++this.conversations}`;
    return {
      kind: "reply",
      turn: {
        conversationId,
        reply: `reply to: ${input.message}`,
        usage: { promptTokens: 3, completionTokens: 4 },
      },
    };
  }
}

/** The audit events of one type (flushed first), each its detail with its actor. */
export function auditedEvents(
  target: {
    services: { audit: { flush(): void } };
    db: { $client: import("bun:sqlite").Database };
  },
  type: string,
) {
  target.services.audit.flush();
  return target.db.$client
    .query<{ detail: string; actor: string }, [string]>(
      "SELECT detail, actor FROM audit_events WHERE type = ? ORDER BY id",
    )
    .all(type)
    .map((row) => ({ ...JSON.parse(row.detail), actor: row.actor }));
}

type Keyed = { config: { audit: { secretKey: string } } };

/** What a WhatsApp message id is stored as in `target`'s file: its keyed hash, never the id. */
export function storedId(target: Keyed, id: string): string {
  return messageIdKeyer(target.config.audit.secretKey)(id);
}

/** Every message id `notification` has put in a payload, so a stored key reads back as its id. */
const idsSent = new Set<string>();
const idsByKey = new Map<string, { keyed: number; ids: Map<string, string> }>();

/**
 * The id a notification sent that `stored` is the key of in `target`'s file (the key itself when
 * none is): what the tests compare, as the file holds no id of Meta's.
 */
export function sentId(target: Keyed, stored: string): string {
  const secret = target.config.audit.secretKey;
  let known = idsByKey.get(secret);
  if (known === undefined) {
    known = { keyed: 0, ids: new Map() };
    idsByKey.set(secret, known);
  }
  if (known.keyed < idsSent.size) {
    const keyOf = messageIdKeyer(secret);
    for (const id of [...idsSent].slice(known.keyed)) known.ids.set(keyOf(id), id);
    known.keyed = idsSent.size;
  }
  return known.ids.get(stored) ?? stored;
}
