/**
 * A small SMTP relay on a loopback port (RFC 5321, the part a client that sends one message per
 * session uses: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no STARTTLS or AUTH), keeping every
 * message it is handed, for tests that check what Alertmanager mails.
 */

export interface ReceivedMail {
  from: string;
  to: string[];
  /** The message as sent (headers and body), dot-stuffing undone. */
  data: string;
}

export interface SmtpServer {
  port: number;
  messages: ReceivedMail[];
  stop(): void;
}

interface Session {
  buffer: string;
  inData: boolean;
  from: string;
  to: string[];
  lines: string[];
}

export function startSmtpServer(): SmtpServer {
  const messages: ReceivedMail[] = [];
  const reply = (socket: { write(data: string): number }, line: string) =>
    socket.write(`${line}\r\n`);

  const listener = Bun.listen<Session>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { buffer: "", inData: false, from: "", to: [], lines: [] };
        reply(socket, "220 localhost ESMTP palisade-test");
      },
      data(socket, chunk) {
        const session = socket.data;
        session.buffer += new TextDecoder().decode(chunk);
        let end = session.buffer.indexOf("\r\n");
        while (end >= 0) {
          const line = session.buffer.slice(0, end);
          session.buffer = session.buffer.slice(end + 2);
          end = session.buffer.indexOf("\r\n");
          if (session.inData) {
            if (line === ".") {
              messages.push({ from: session.from, to: session.to, data: session.lines.join("\n") });
              session.inData = false;
              session.lines = [];
              reply(socket, "250 2.0.0 queued");
            } else {
              session.lines.push(line.startsWith("..") ? line.slice(1) : line);
            }
            continue;
          }
          const verb = line.slice(0, 4).toUpperCase();
          if (verb === "EHLO") {
            reply(socket, "250-localhost");
            reply(socket, "250 8BITMIME");
          } else if (verb === "HELO") {
            reply(socket, "250 localhost");
          } else if (verb === "MAIL") {
            session.from = /<([^>]*)>/.exec(line)?.[1] ?? "";
            session.to = [];
            reply(socket, "250 2.1.0 ok");
          } else if (verb === "RCPT") {
            session.to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
            reply(socket, "250 2.1.5 ok");
          } else if (verb === "DATA") {
            session.inData = true;
            reply(socket, "354 end with <CRLF>.<CRLF>");
          } else if (verb === "RSET" || verb === "NOOP") {
            reply(socket, "250 ok");
          } else if (verb === "QUIT") {
            reply(socket, "221 bye");
            socket.end();
          } else {
            reply(socket, "502 5.5.2 not implemented");
          }
        }
      },
    },
  });
  return { port: listener.port, messages, stop: () => listener.stop(true) };
}
