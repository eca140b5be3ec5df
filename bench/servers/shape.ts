/**
 * @module
 * A′. Bare Elysia answering with Palisade's response shape, and nothing else: A's routes, each
 * answer carrying the headers every Palisade answer carries (the same fixed security set, built
 * once as Palisade builds it, plus `Vary`, a request id and the five rate-limit headers, whose
 * values change per request as Palisade's do), and the socket's peer address read as the
 * client-address stage reads it (`server.requestIP`). No defence runs: no limiter, no token check,
 * no schema, no log.
 *
 * It measures what the issue's ratio targets cannot get under. Building these headers for every
 * response (their values change per request) costs more than the rest of a small JSON answer;
 * the same headers prebuilt and reused cost Bun little, and plain `Bun.serve` doing this same work
 * is no faster than Elysia (README, Performance: What limits). Whatever Palisade's defences cost,
 * B's ratio to A stays below A′'s.
 */
import { Elysia } from "elysia";
import { securityResponseHeaders } from "../../src/plugins/security-headers";
import { bareRoutes } from "./payload";

const port = Number(process.argv[2] ?? 0);
const responses = securityResponseHeaders({ hsts: false });
let remaining = 1_000_000;

const app = bareRoutes(
  new Elysia()
    .onRequest(function palisadeShape({ request, set, server }) {
      const peer = server?.requestIP(request)?.address ?? "";
      remaining = remaining > 1 ? remaining - 1 : 1_000_000;
      const headers = set.headers as Record<string, string>;
      headers.vary = "Origin";
      headers["x-request-id"] = Bun.randomUUIDv7();
      headers["x-ratelimit-limit"] = "1000000";
      headers["x-ratelimit-remaining"] = String(remaining);
      headers["x-ratelimit-reset"] = String(peer.length);
      headers["ratelimit-policy"] = '"default";q=1000000;w=60';
      headers.ratelimit = `"default";r=${remaining};t=60`;
    })
    // Built as Palisade builds a JSON answer (plugins/security-headers): on the prebuilt set, with
    // the request's own headers laid over the response's copy of it.
    .mapResponse(function withPalisadeHeaders({ responseValue, set, route }) {
      const response = responses.respond(route, set.headers, responseValue, 200);
      set.headers = {};
      return response;
    }),
).listen({ port, hostname: "127.0.0.1" });
process.stderr.write(`ready ${app.server!.port}\n`);
process.on("SIGINT", () => process.exit(0));
