// A Redis Cluster of one's own on free ports: what the cluster test and `bench/tools/per-order.ts
// --cluster` run Bakery against.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { freePort } from './stack'
import { waitFor } from './wait'

const run = promisify(execFile)

/**
 * A Redis Cluster of the caller's own (a test's, a benchmark's): `masters` masters with one
 * replica each (or none: `replicas: 0`), every node a redis-server on a free port with its
 * directory in a temporary folder, created with `redis-cli --cluster create`. Nodes still running are killed when the cluster is
 * closed or the process exits.
 */
export interface RedisNode {
  readonly port: number
  readonly isRunning: () => boolean
  /** SIGKILL: no shutdown, no last write. */
  readonly kill: () => Promise<void>
  /** What the node says it is now (`INFO replication`). */
  readonly role: () => Promise<'master' | 'slave'>
}

export interface RedisCluster {
  readonly nodes: readonly RedisNode[]
  /** REDIS_CLUSTER_NODES for Bakery: every node, comma-separated. */
  readonly seeds: string
  /** The running masters, as the cluster reports them. */
  readonly masters: () => Promise<RedisNode[]>
  /** The keys each running master holds (`DBSIZE`), by port. */
  readonly keysPerMaster: () => Promise<Map<number, number>>
  /**
   * Waits until every slot is served by a running master and the cluster says `ok`, and (unless
   * `replicated` is false, as it is by default without replicas) every master has a replica in
   * sync, which a WAIT needs.
   */
  readonly healthy: (options?: { replicated?: boolean }) => Promise<void>
  readonly close: () => Promise<void>
}

export async function startRedisCluster(
  masters = 3,
  { replicas = 1 }: { replicas?: 0 | 1 } = {},
): Promise<RedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'bakery-redis-cluster-'))
  const ports = await distinctFreePorts(masters * (1 + replicas))
  const busPorts = await distinctFreePorts(ports.length, new Set(ports))
  const children = new Map<number, ChildProcess>()
  const killAll = () => {
    for (const child of children.values()) if (child.exitCode === null) child.kill('SIGKILL')
  }
  process.once('exit', killAll)

  const node = (port: number): RedisNode => ({
    port,
    isRunning: () => {
      const child = children.get(port)
      return !!child && child.exitCode === null && child.signalCode === null
    },
    kill: async () => {
      const child = children.get(port)
      if (!child || child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGKILL')
      await exited
    },
    role: async () => {
      const info = await ask(port, (redis) => redis.info('replication'))
      return /role:master/.test(info) ? 'master' : 'slave'
    },
  })
  const nodes = ports.map(node)
  const running = () => nodes.filter((n) => n.isRunning())

  try {
    for (const [i, port] of ports.entries()) {
      const nodeDir = join(dir, String(port))
      await mkdir(nodeDir)
      const child = spawn(
        'redis-server',
        [
          ...['--port', String(port), '--bind', '127.0.0.1', '--dir', nodeDir],
          ...['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
          // The cluster bus on a free port of its own (by default port + 10000, maybe taken).
          ...['--cluster-port', String(busPorts[i])],
          // A master that stops answering is replaced after this long.
          ...['--cluster-node-timeout', '2000', '--save', '', '--appendonly', 'no'],
        ],
        { stdio: 'ignore' },
      )
      children.set(port, child)
    }
    for (const port of ports)
      await waitFor(`redis-server on ${port}`, async () => {
        if (!nodes.find((n) => n.port === port)!.isRunning())
          throw new Error(`redis-server on ${port} exited`)
        return (await ask(port, (redis) => redis.ping())) === 'PONG'
      })
    await run('redis-cli', [
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ])
  } catch (error) {
    killAll()
    await rm(dir, { recursive: true, force: true })
    throw error
  }

  const masterNodes = async () => {
    const roles = await Promise.all(running().map(async (n) => [n, await n.role()] as const))
    return roles.filter(([, role]) => role === 'master').map(([n]) => n)
  }
  const cluster: RedisCluster = {
    nodes,
    seeds: ports.map((port) => `127.0.0.1:${port}`).join(','),
    masters: masterNodes,
    keysPerMaster: async () => {
      const counts = new Map<number, number>()
      for (const master of await masterNodes())
        counts.set(master.port, await ask(master.port, (redis) => redis.dbsize()))
      return counts
    },
    healthy: async ({ replicated = replicas > 0 } = {}) => {
      await waitFor(
        `the Redis Cluster to serve every slot${replicated ? ', each master replicated' : ''}`,
        async () => {
          const states = await Promise.all(
            running().map((n) => ask(n.port, (redis) => redis.cluster('INFO'))),
          )
          const serving = states.every(
            (info) => /cluster_state:ok/.test(info) && /cluster_slots_ok:16384/.test(info),
          )
          if (!serving || !replicated) return serving
          const replication = await Promise.all(
            (await masterNodes()).map((m) => ask(m.port, (redis) => redis.info('replication'))),
          )
          return replication.every((info) => /slave\d+:.*state=online/.test(info))
        },
        { timeoutMs: 30_000, intervalMs: 200 },
      )
    },
    close: async () => {
      await Promise.all(nodes.map((n) => n.kill()))
      process.removeListener('exit', killAll)
      await rm(dir, { recursive: true, force: true })
    },
  }
  await cluster.healthy()
  return cluster
}

/** One command on one node, over a connection of its own that does not follow redirections. */
async function ask<T>(port: number, command: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null })
  redis.on('error', () => undefined)
  try {
    await redis.connect()
    return await command(redis)
  } finally {
    redis.disconnect()
  }
}

async function distinctFreePorts(count: number, taken = new Set<number>()): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < count) {
    const port = await freePort()
    if (!taken.has(port)) ports.add(port)
  }
  return [...ports]
}
