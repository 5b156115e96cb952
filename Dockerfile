# One image for the operator and for every worker role it deploys: the entry point is the backbeat CLI,
# bundled by esbuild (scripts/bundle.ts) from the TypeScript sources. Pod templates set
#   command: ["node", "dist/main.mjs"]   args: ["operator", ...]  or  ["worker", ...]
#
# The root filesystem can be mounted read-only (readOnlyRootFilesystem: true): nothing is written under
# /app or anywhere else at run time, and logs go to stdout.
#
#   make images                     # docker build -t backbeat:<package.json version> .
ARG NODE_IMAGE=node:24.21.0-bookworm-slim
# Where stage 1 runs npm ci: the same base unless the build machine needs another (its own CA, for one).
ARG BUILD_IMAGE=${NODE_IMAGE}

# Stage 1: the npm dependencies exactly as package-lock.json pins them, the bundle built with the dev ones
# (esbuild) from the source folders (.dockerignore keeps tests out), then the dev ones dropped. No install
# script is run: no production dependency has one (none without "dev" has hasInstallScript in
# package-lock.json), and esbuild's binary comes as a package of its own.
FROM ${BUILD_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
COPY scripts/bundle.ts ./scripts/
COPY lib ./lib
COPY workers ./workers
COPY operator ./operator
COPY cli ./cli
RUN node scripts/bundle.ts /app/dist && npm prune --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error

# Stage 2: the runtime: the bundle, and the production node_modules for the two packages it leaves out.
FROM ${NODE_IMAGE}
ARG NODE_IMAGE
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="backbeat" \
      org.opencontainers.image.description="Asynchronous S3 replication engine run as a Kubernetes operator (operator and worker roles)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"

# A named user for uid/gid 10001 (the chart's runAsUser/runAsGroup), so that the uid resolves to a name.
RUN groupadd --gid 10001 backbeat \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin backbeat

ENV NODE_ENV=production
# As bin/backbeat does: a young generation of 16 MiB (V8 would grow it to 64, and RSS with it). The
# heap itself Node sizes from the pod's memory limit (half of it).
ENV NODE_OPTIONS="--max-semi-space-size=16"
WORKDIR /app
# Owned by root and not writable by the runtime user: the image content is immutable at run time.
COPY --from=build /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist

USER 10001:10001
ENTRYPOINT ["node", "dist/main.mjs"]
