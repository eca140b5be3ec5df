/**
 * @module
 * D. The Elysia plugin stack on Bun, as a user assembles it from Elysia's ecosystem:
 * elysia-helmet (security headers), @elysiajs/cors, elysia-rate-limit (in-memory, per socket
 * address; limit raised so nothing is refused) and @elysiajs/jwt (HS256 verify) on the protected
 * route, whose body Elysia validates with the same schema Palisade uses.
 */
import { cors } from "@elysiajs/cors";
import { jwt } from "@elysiajs/jwt";
import { Elysia } from "elysia";
import { helmet } from "elysia-helmet";
import { rateLimit } from "elysia-rate-limit";
import { BENCH_JWT_SECRET, BENCH_PAYLOAD, ProtectedBody } from "./payload";

const port = Number(process.argv[2] ?? 0);
const app = new Elysia()
  .use(helmet())
  .use(cors({ origin: "https://app.example" }))
  .get("/health", () => ({ status: "ok" }))
  .use(rateLimit({ max: 1_000_000_000, duration: 60_000 }))
  .use(jwt({ name: "jwt", secret: BENCH_JWT_SECRET, alg: "HS256" }))
  .get("/bench", () => BENCH_PAYLOAD)
  .post(
    "/bench/protected",
    async ({ body, headers, jwt, status }) => {
      const token = headers.authorization?.startsWith("Bearer ")
        ? headers.authorization.slice(7)
        : undefined;
      const claims = token ? await jwt.verify(token) : false;
      if (!claims) return status(401, { error: "unauthenticated" });
      return { ok: true, length: body.message.length, user: claims.sub };
    },
    { body: ProtectedBody },
  )
  .listen({ port, hostname: "127.0.0.1" });
process.stderr.write(`ready ${app.server!.port}\n`);
process.on("SIGINT", () => process.exit(0));
