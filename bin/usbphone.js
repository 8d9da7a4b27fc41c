#!/usr/bin/env node
// Entry point of the `usbphone` CLI: runs cli/main.ts through tsx (the project ships no build step).
// Before the dependencies are installed it says so in one line, not with a module-loader stack.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function notInstalled(e) {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !/Cannot find package/.test(e.message)) throw e;
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  process.stderr.write(`usbphone: the dependencies are not installed: run 'npm ci' in ${root} (every 'make' target does it too) (CLI_NOT_INSTALLED)\n`);
  process.exit(2);
}

const { register } = await import('tsx/esm/api').catch(notInstalled);
register();
const { main } = await import('../cli/main.ts').catch(notInstalled);
process.exitCode = await main(process.argv.slice(2));
