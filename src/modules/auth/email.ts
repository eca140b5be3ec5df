/**
 * @module
 * Email addresses as accounts: trimmed, the domain lower-cased (the local part is the mailbox
 * owner's and may be case-sensitive, so it is kept), and checked for a plausible shape. Uniqueness
 * in the database ignores case entirely, so `Ann@x` and `ann@x` cannot both register.
 */

const MAX_EMAIL_LENGTH = 254;
// One @, no spaces or control characters, a dotted domain: what every real address has.
const EMAIL_SHAPE = /^[^\s@\p{Cc}]{1,64}@[^\s@\p{Cc}]+\.[^\s@\p{Cc}]+$/u;

export function normalizeEmail(raw: string): string | null {
  const trimmed = raw.trim();
  if (trimmed.length > MAX_EMAIL_LENGTH || !EMAIL_SHAPE.test(trimmed)) return null;
  const at = trimmed.lastIndexOf("@");
  return `${trimmed.slice(0, at)}@${trimmed.slice(at + 1).toLowerCase()}`;
}
