# Palisade on the official Bun image. Build: docker build -t palisade .
# Secrets come from Docker secrets through NAME_FILE (see compose.yaml), never from build args.
# The service runs as the executable `bun run build` compiles (README, Performance: it starts in a
# third of the source entry's time and idles smaller); the source and its dependencies stay in the
# image for the operator CLI (`docker compose exec palisade bun run cli ...`).
ARG BUN_VERSION=1.4.5

FROM oven/bun:${BUN_VERSION}-slim AS deps
WORKDIR /app
COPY package.json bun.lock ./
RUN bun install --frozen-lockfile --production --ignore-scripts

FROM deps AS build
COPY tsconfig.json ./
COPY drizzle ./drizzle
COPY scripts/build.ts ./scripts/build.ts
COPY src ./src
RUN bun run build

FROM oven/bun:${BUN_VERSION}-slim
WORKDIR /app
ENV APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATABASE_PATH=/data/palisade.db \
    JWT_SECRET_KEY_FILE=/run/secrets/jwt_secret_key \
    CSRF_SECRET_KEY_FILE=/run/secrets/csrf_secret_key \
    AUDIT_SECRET_KEY_FILE=/run/secrets/audit_secret_key
COPY --from=deps /app/node_modules ./node_modules
COPY package.json bun.lock tsconfig.json ./
COPY drizzle ./drizzle
COPY src ./src
COPY --from=build /app/dist/palisade ./dist/palisade
# The image's own non-root user; the database lives on a volume it owns.
RUN mkdir -p /data && chown bun:bun /data
USER bun
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD bun -e "fetch('http://127.0.0.1:' + (process.env.PORT ?? 3000) + '/health').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"
STOPSIGNAL SIGTERM
CMD ["./dist/palisade"]
