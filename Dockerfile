# xpmesh instance image. Multi-stage: dependencies and build in full stages, a small runtime stage
# with production dependencies and compiled JavaScript only, running as the non-root `node` user.
# `npm ci` needs the npm registry: build with `--network host` (docker-compose.yml sets it).

# ---- production dependencies only ---------------------------------------------------------------
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/kernel/package.json packages/kernel/
COPY packages/driver/package.json packages/driver/
COPY packages/node/package.json packages/node/
COPY packages/testkit/package.json packages/testkit/
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- build: all dependencies + TypeScript -------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/kernel/package.json packages/kernel/
COPY packages/driver/package.json packages/driver/
COPY packages/node/package.json packages/node/
COPY packages/testkit/package.json packages/testkit/
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY packages packages
RUN npx tsc -b \
 && find packages -path '*/dist/*' \( -name '*.test.js' -o -name '*.test.d.ts' -o -name '*.map' -o -name '*.tsbuildinfo' \) -exec rm -f {} + \
 && find packages -path '*/dist/*' -type d \( -name test -o -name bench -o -name model \) -prune -exec rm -rf {} +

# ---- runtime -----------------------------------------------------------------------------------
# packages/testkit (fault harness, soak, fuzzer, cluster harnesses) is test tooling: never copied here.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules node_modules
COPY --from=deps /app/package.json package.json
COPY --from=build /app/packages/protocol/package.json packages/protocol/package.json
COPY --from=build /app/packages/protocol/dist packages/protocol/dist
COPY --from=build /app/packages/kernel/package.json packages/kernel/package.json
COPY --from=build /app/packages/kernel/dist packages/kernel/dist
COPY --from=build /app/packages/driver/package.json packages/driver/package.json
COPY --from=build /app/packages/driver/dist packages/driver/dist
COPY --from=build /app/packages/node/package.json packages/node/package.json
COPY --from=build /app/packages/node/dist packages/node/dist
# the live view's static files are read from the source tree at run time
COPY --from=build /app/packages/node/src/view/static packages/node/src/view/static
USER node
# 7400: peer links (WebSocket); 7500: admin HTTP API
EXPOSE 7400 7500
ENTRYPOINT ["node", "/app/packages/node/dist/cli/main.js"]
CMD ["node"]
