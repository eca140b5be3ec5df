/**
 * @module
 * Raw HTTP over a TCP socket (Bun.connect), for requests `fetch` will not send: a malformed or
 * empty Host, HTTP/1.0 without Host. Resolves with the whole response once the server closes the
 * connection (or after `timeoutMs`).
 */

export interface RawHttpResponse {
  /** The status of the status line, 0 when none came. */
  status: number;
  head: string;
  headers: Record<string, string>;
  body: string;
  text: string;
}

export async function rawHttp(
  port: number,
  request: string,
  timeoutMs = 2000,
): Promise<RawHttpResponse> {
  const chunks: Uint8Array[] = [];
  let done: () => void = () => {};
  const closed = new Promise<void>((resolve) => {
    done = resolve;
  });
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_socket, chunk) {
        chunks.push(new Uint8Array(chunk));
      },
      close() {
        done();
      },
      end() {
        done();
      },
      error() {
        done();
      },
    },
  });
  socket.write(request);
  await Promise.race([closed, Bun.sleep(timeoutMs)]);
  socket.end();
  const text = Buffer.concat(chunks).toString("utf8");
  const split = text.indexOf("\r\n\r\n");
  const head = split < 0 ? text : text.slice(0, split);
  const headers: Record<string, string> = {};
  for (const line of head.split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0)
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
  return { status, head, headers, body: split < 0 ? "" : text.slice(split + 4), text };
}
