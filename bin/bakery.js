#!/usr/bin/env node
'use strict'
const wanted = Number(/\d+/.exec(require('../package.json').engines.node)[0])
const major = Number(process.versions.node.split('.')[0])
if (major < wanted) {
  process.stderr.write(
    `bakery: needs Node ${wanted} or newer (package.json engines), and this is Node ` +
      `${process.versions.node}; see "Node" in the README (\`source .ci/node.sh\` fetches it).\n`,
  )
  process.exit(1)
}
try {
  require.resolve('../dist/cli.js')
} catch {
  process.stderr.write(
    'bakery: dist/ is missing; build it first with `npm run build` (npm ci does).\n',
  )
  process.exit(1)
}
require('../dist/cli.js')
