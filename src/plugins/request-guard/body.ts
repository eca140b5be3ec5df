import { AppError } from "../../errors";

/**
 * Reads a body of unknown length (chunked) and stops as soon as it passes `limit`, so an endless
 * stream costs at most `limit` bytes of memory. Returns the bytes as received: webhook signatures
 * are computed over them, not over a decoded and re-encoded string.
 */
export async function readBodyWithin(request: Request, limit: number): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  // A declared length was already checked against the limit, and Bun enforces it while reading.
  if (declared !== null) return request.bytes();
  if (request.body === null) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new AppError("PAYLOAD_TOO_LARGE", `The body is over ${limit} bytes.`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
