#!/usr/bin/env node
// The `recserve` command: runs the compiled CLI (npm run build:ts produces dist/).
import('../dist/src/cli/main.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    console.error('recserve is not built yet: run `npm run setup` (or `npm start`) first');
    process.exit(1);
  }
  throw err;
});
