#!/usr/bin/env node
'use strict'
try {
  require.resolve('../dist/cli.js')
} catch {
  process.stderr.write(
    'bakery: dist/ is missing; build it first with `npm run build` (npm ci does).\n',
  )
  process.exit(1)
}
require('../dist/cli.js')
