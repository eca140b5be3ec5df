/**
 * @module
 * The rules a chat message must pass, wherever it comes from (`POST /api/chat`, a WhatsApp
 * message): trimmed, 1 to 4000 characters (code points), no control character but newline and
 * tab (no NUL, no CR, no C1 controls), well-formed Unicode, at least one visible character. The
 * failure names the rule, never the text. A message that fails is refused whole, never altered.
 */

import { showsSomething } from "../../visible-text";

export const MAX_MESSAGE_CHARACTERS = 4000;

export type MessageCheck = { ok: true; message: string } | { ok: false; rule: string };

// Unicode's Cc category (C0, DEL, C1), but tab and newline.
const FORBIDDEN_CONTROL = /[^\P{Cc}\t\n]/u;

export function checkChatMessage(raw: string): MessageCheck {
  if (!raw.isWellFormed()) return { ok: false, rule: "Must be well-formed Unicode" };
  if (FORBIDDEN_CONTROL.test(raw)) {
    return { ok: false, rule: "Must not contain control characters other than newline and tab" };
  }
  const message = raw.trim();
  if (message === "") return { ok: false, rule: "Must not be empty or only whitespace" };
  if (!showsSomething(message)) {
    return { ok: false, rule: "Must contain at least one visible character" };
  }
  // Counted in code points: an emoji is one character, as a person counts it.
  let length = 0;
  for (const _ of message) {
    if (++length > MAX_MESSAGE_CHARACTERS) {
      return {
        ok: false,
        rule: `Must be at most ${MAX_MESSAGE_CHARACTERS} characters after trimming`,
      };
    }
  }
  return { ok: true, message };
}
