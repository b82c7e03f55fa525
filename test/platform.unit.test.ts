import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from './support'

/** One Node major everywhere: the one the tests run on is the one that ships. */
describe('the Node that Bakery runs on', () => {
  const read = (file: string) => readFileSync(join(ROOT, file), 'utf8')
  const pkg = JSON.parse(read('package.json')) as {
    engines: { node: string }
    devDependencies: Record<string, string>
  }
  const pinned = read('.node-version').trim()
  const major = (version: string) => Number(/\d+/.exec(version)?.[0])

  it('is pinned in .node-version to a release of the major that engines names', () => {
    assert.match(pinned, /^\d+\.\d+\.\d+$/)
    assert.match(pkg.engines.node, /^>=\d+$/)
    assert.equal(major(pinned), major(pkg.engines.node))
  })

  it('is the same release in the Dockerfile, in every stage', () => {
    const bases = [...read('Dockerfile').matchAll(/^FROM\s+node:(\S+)/gm)].map((m) => m[1])
    assert.ok(bases.length > 0, 'the Dockerfile starts from a node image')
    for (const base of bases) assert.equal(base, `${pinned}-bookworm-slim`)
  })

  it('has the types of the same major', () => {
    assert.equal(major(pkg.devDependencies['@types/node'] ?? ''), major(pinned))
  })

  it('is what this test runs on, or newer', () => {
    assert.ok(major(process.versions.node) >= major(pinned), `Node ${process.versions.node}`)
  })
})
