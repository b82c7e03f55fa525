import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { ROLE_NODE_OPTIONS } from '../src/platform/heap'
import {
  createVhost,
  dropNamespace,
  isolatedEnv,
  startRole,
  uniqueNamespace,
  waitFor,
} from './support'

/** The processes `pid` started, as the kernel lists them. */
function childrenOf(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
    .split(' ')
    .filter(Boolean)
    .map(Number)
}

function environOf(pid: number): Map<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8')
    .split('\0')
    .filter(Boolean)
    .map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)])
  return new Map(entries as [string, string][])
}

const isRunning = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe('bakery dev', () => {
  it('runs the three roles with the heap they have in the cluster, and stops them together', async () => {
    const vhost = await createVhost('dev')
    const namespace = uniqueNamespace('dev')
    // The developer's own flags come after Bakery's, so they win.
    const env = isolatedEnv(vhost.url, namespace, { NODE_OPTIONS: '--stack-trace-limit=20' })
    const dev = await startRole('dev', env)
    let roles: number[] = []
    try {
      await waitFor('three roles connected', () =>
        dev.output().split('connected to RabbitMQ').length > 3 ? true : undefined,
      )
      roles = childrenOf(dev.child.pid ?? 0)
      assert.equal(roles.length, 3, dev.output())
      for (const pid of roles)
        assert.equal(
          environOf(pid).get('NODE_OPTIONS'),
          `${ROLE_NODE_OPTIONS} --stack-trace-limit=20`,
        )

      dev.child.kill('SIGINT')
      assert.equal(await dev.exited, 0, dev.output())
      for (const pid of roles) assert.ok(!isRunning(pid), `role ${pid} outlived bakery dev`)
    } finally {
      // Each role has a process group of its own: a failed test must not leave them behind.
      for (const pid of roles.filter(isRunning)) process.kill(pid, 'SIGKILL')
      await dev.stop('SIGKILL')
      await dropNamespace(namespace)
      await vhost.drop()
    }
  })
})
