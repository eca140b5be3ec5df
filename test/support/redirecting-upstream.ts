/**
 * An upstream that answers every request with a 307 to another local server, which records what
 * reaches it: whether a client follows a redirect, and what it would have sent there.
 */
export interface RedirectingUpstream {
  /** The redirecting server's base URL. */
  url: string;
  /** The bodies that reached the server redirected to. */
  readonly elsewhere: string[];
  stop(): void;
}

export function startRedirectingUpstream(): RedirectingUpstream {
  const elsewhere: string[] = [];
  const catcher = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      elsewhere.push(await request.text());
      return Response.json({});
    },
  });
  const redirecting = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (request) =>
      new Response(null, {
        status: 307,
        headers: { location: `http://127.0.0.1:${catcher.port}${new URL(request.url).pathname}` },
      }),
  });
  return {
    url: `http://127.0.0.1:${redirecting.port}`,
    elsewhere,
    stop() {
      redirecting.stop(true);
      catcher.stop(true);
    },
  };
}
