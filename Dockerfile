# syntax=docker/dockerfile:1

# Every stage starts from the same pinned Node LTS, so the image Tilt runs in development and the
# image that ships run the same node.
FROM node:24.22.3-bookworm-slim AS base
WORKDIR /app

# Dev dependencies too: the compiler is needed to build. No scripts: the package's `prepare`
# builds, and the sources are not here yet (the build stage builds).
FROM base AS deps
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts --no-audit --no-fund

FROM deps AS build
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Tilt's target (see Tiltfile). The TypeScript sources run as they are, and `node --watch` restarts
# the role when live_update syncs a change, stopping the old process with SIGTERM and waiting for
# its drain. Owned by the unprivileged user because live_update writes here and reruns `npm ci`.
FROM base AS dev
RUN chown node:node /app
USER 1000:1000
COPY --chown=1000:1000 package.json package-lock.json ./
RUN --mount=type=cache,target=/home/node/.npm,uid=1000,gid=1000 npm ci --ignore-scripts --no-audit --no-fund
COPY --chown=1000:1000 tsconfig.json tsconfig.build.json ./
COPY --chown=1000:1000 src ./src
# The storefront's browser script is served compiled, also in development.
RUN npm run build:storefront
ENTRYPOINT ["node", "--watch", "--import", "tsx", "src/cli.ts"]
CMD ["reception"]

# What ships: compiled JavaScript and production dependencies only, owned by root and run by an
# unprivileged user, so the process cannot rewrite its own code.
FROM base AS runtime
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY --from=build /app/dist ./dist
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 1000:1000
EXPOSE 8000 8080
# Exec form: node is PID 1 and receives SIGTERM itself. A PID 1 ignores signals it has no handler
# for; the CLI installs one and drains. OpenTelemetry is started by the CLI before any app module.
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["reception"]
