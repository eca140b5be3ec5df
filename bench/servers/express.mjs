/**
 * C. The Express stack on Node: Express 5 + helmet + cors + express-rate-limit (in-memory, limit
 * raised so nothing is refused) + express.json + jsonwebtoken (HS256) on the protected route, its
 * body checked by hand as an Express user would. `node bench/servers/express.mjs <string|key> <port>`:
 * `string` verifies with the secret as a string (jsonwebtoken turns it into a key on every call),
 * `key` with a crypto KeyObject made once. Plain JavaScript: Node runs it without a build step.
 */
import { createSecretKey } from "node:crypto";
import cors from "cors";
import express from "express";
import rateLimit from "express-rate-limit";
import helmet from "helmet";
import jwt from "jsonwebtoken";

// Kept in step with bench/servers/payload.ts.
const BENCH_PAYLOAD = { id: 42, name: "palisade", tags: ["a", "b"], ok: true };
const BENCH_JWT_SECRET = "bench-jwt-secret-0123456789abcdefghijklmnopq";

const secret =
  process.argv[2] === "key" ? createSecretKey(Buffer.from(BENCH_JWT_SECRET)) : BENCH_JWT_SECRET;
const port = Number(process.argv[3] ?? 0);

function validBody(body) {
  return (
    body !== null &&
    typeof body === "object" &&
    typeof body.message === "string" &&
    body.message.length >= 1 &&
    body.message.length <= 500 &&
    Number.isInteger(body.count) &&
    body.count >= 0 &&
    body.count <= 1000
  );
}

function bearer(req, res, next) {
  const header = req.get("authorization") ?? "";
  if (!header.startsWith("Bearer ")) return res.status(401).json({ error: "unauthenticated" });
  jwt.verify(header.slice(7), secret, { algorithms: ["HS256"] }, (error, claims) => {
    if (error) return res.status(401).json({ error: "unauthenticated" });
    req.user = claims;
    next();
  });
}

const app = express();
app.disable("x-powered-by");
app.use(helmet());
app.use(cors({ origin: "https://app.example" }));
app.get("/health", (_req, res) => res.json({ status: "ok" }));
app.use(
  rateLimit({
    windowMs: 60_000,
    limit: 1_000_000_000,
    standardHeaders: "draft-8",
    legacyHeaders: false,
  }),
);
app.use(express.json({ limit: "32kb" }));
app.get("/bench", (_req, res) => res.json(BENCH_PAYLOAD));
app.post("/bench/protected", bearer, (req, res) => {
  if (!validBody(req.body)) return res.status(422).json({ error: "validation" });
  res.json({ ok: true, length: req.body.message.length, user: req.user.sub });
});
const server = app.listen(port, "127.0.0.1", () => {
  process.stderr.write(`ready ${server.address().port}\n`);
});
process.on("SIGINT", () => process.exit(0));
