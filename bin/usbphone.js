#!/usr/bin/env node
// Entry point of the `usbphone` CLI: runs cli/main.ts through tsx (the project ships no build step).
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
