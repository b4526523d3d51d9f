# xpmesh instance image. Multi-stage: dependencies and build in full stages, a small runtime stage
# with production dependencies and compiled JavaScript only, running as the non-root `node` user.
# `npm ci` needs the npm registry: build with `--network host` (docker-compose.yml sets it).
# Every workspace under packages/ is picked up: no package is named here.

# ---- the workspaces' package.json files only (so `npm ci` is cached until they change) ---------
FROM node:20-bookworm-slim AS manifests
WORKDIR /app
COPY packages packages
RUN node -e "const fs=require('fs'),p=require('path');for(const d of fs.readdirSync('packages'))for(const f of fs.readdirSync(p.join('packages',d)))if(f!=='package.json')fs.rmSync(p.join('packages',d,f),{recursive:true,force:true})"

# ---- production dependencies only ---------------------------------------------------------------
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=manifests /app/packages packages
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- build: all dependencies + TypeScript -------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY --from=manifests /app/packages packages
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY packages packages
# /out/<package>: package.json + dist (tests, benchmarks, models, maps and build info removed); the
# live view's static files are read from the source tree at run time. packages/testkit (fault
# harness, soak, fuzzer, chaos tool) goes to /out-testkit, which the runtime image never copies: only
# the Swarm end-to-end test adds it, in a stage of its own appended to this file (swarm.test.ts).
RUN npx tsc -b \
 && find packages -path '*/dist/*' \( -name '*.test.js' -o -name '*.test.d.ts' -o -name '*.map' -o -name '*.tsbuildinfo' \) -exec rm -f {} + \
 && find packages -path '*/dist/*' -type d \( -name test -o -name bench -o -name model \) -prune -exec rm -rf {} + \
 && for d in packages/*/; do n=$(basename "$d"); o=/out; [ "$n" = testkit ] && o=/out-testkit; mkdir -p "$o/$n"; \
      cp "$d/package.json" "$o/$n/"; if [ -d "$d/dist" ]; then cp -r "$d/dist" "$o/$n/dist"; fi; done \
 && mkdir -p /out/node/src/view && cp -r packages/node/src/view/static /out/node/src/view/static

# ---- runtime -----------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules node_modules
COPY --from=deps /app/package.json package.json
COPY --from=build /out packages
USER node
# 7400: peer links (WebSocket); 7500: admin HTTP API
EXPOSE 7400 7500
ENTRYPOINT ["node", "/app/packages/node/dist/cli/main.js"]
CMD ["node"]
