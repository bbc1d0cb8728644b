# syntax=docker/dockerfile:1

# Build stage: full dependencies; type-check src/, then bundle it into dist/ (scripts/build.mjs).
FROM node:22-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/build.mjs scripts/transpile-src.mjs ./scripts/
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies, compiled code and SQL migrations only.
FROM node:22-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# errand finds migrations/ beside package.json, i.e. /app/migrations.
COPY migrations ./migrations
# MAIL_DIR (var/mail) must be writable when SMTP_URL is unset.
RUN mkdir -p /app/var/mail && chown -R node:node /app/var
USER node
EXPOSE 3000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
CMD ["node", "dist/main.js"]
