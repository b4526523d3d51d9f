#!/usr/bin/env node
// The `xpmesh` command as npm links it. This file is committed (not built) so that the link exists
// even when npm creates bin links before the workspace's `prepare` (tsc -b) has run: `npm ci` and
// `npm install` on a fresh clone link bins first and build afterwards. It only loads the compiled CLI.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write(
    `xpmesh: the CLI is not built (${fileURLToPath(main)} is missing).\n` +
      'Run `npm run build` (or `npx tsc -b`) at the repository root, then try again.\n',
  );
  process.exit(1);
}
await import(main.href);
