/**
 * @module
 * A. The floor: bare Elysia on Bun serving the bench's routes with no defence at all — no security
 * headers, no limiter, no token check, no schema (the body is parsed, not validated). Every other
 * server's figure is read as a ratio to this one in the same round.
 */
import { Elysia } from "elysia";
import { bareRoutes } from "./payload";

const port = Number(process.argv[2] ?? 0);
const app = bareRoutes(new Elysia()).listen({ port, hostname: "127.0.0.1" });
process.stderr.write(`ready ${app.server!.port}\n`);
process.on("SIGINT", () => process.exit(0));
