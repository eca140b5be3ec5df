/**
 * @module
 * A streamed reply's pieces made well-formed as they go, so that what the client is sent reads as
 * the reply stored (which is the whole text's `toWellFormed()`): a lone surrogate becomes U+FFFD,
 * and a high surrogate that ends a piece is held back until the next piece says whether its pair
 * follows. Per piece alone, an emoji split across two pieces would become two U+FFFD.
 */

const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;

export class WellFormedPieces {
  private held = "";

  /** What of `piece` (after what was held back) can be sent now. */
  next(piece: string): string {
    let text = this.held + piece;
    this.held = "";
    if (text.length > 0 && isHighSurrogate(text.charCodeAt(text.length - 1))) {
      this.held = text.slice(-1);
      text = text.slice(0, -1);
    }
    return text.toWellFormed();
  }

  /** What is still held back once the reply has ended: a high surrogate with no pair, U+FFFD. */
  end(): string {
    const rest = this.held.toWellFormed();
    this.held = "";
    return rest;
  }
}
