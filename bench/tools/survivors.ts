// What outlives a scavenge in one role, by the code that allocated it. Objects that survive a
// young-generation collection are what the collector copies, and what it promotes to the old
// generation if they survive again: they set the scavenges' pauses and how often a full
// collection runs. The role runs under the inspector, next to the other two, at a steady --rate
// of orders; V8's sampling heap profiler keeps only the objects that outlived a scavenge.
//   node --experimental-websocket --import tsx bench/tools/survivors.ts [--role reception] [--rate 150]
// --all counts every allocation instead, whether a scavenge collected it or not.
// The inspector slows the role down: read the shares, not the latencies.
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { paced } from '../load-worker'
import { frameName, packageOf } from '../profile'
import { ROLES, type Role } from './steady'
import { roleNodeOptions } from '../../src/platform/heap'
import {
  createVhost,
  dropNamespace,
  freePort,
  isolatedEnv,
  startRole,
  uniqueNamespace,
  type RoleProcess,
} from '../../harness'

const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'reception' },
    rate: { type: 'string', default: '150' },
    seconds: { type: 'string', default: '15' },
    top: { type: 'string', default: '15' },
    all: { type: 'boolean', default: false },
  },
})
const WARM_UP_S = 5

interface SamplingNode {
  readonly callFrame: { functionName: string; url: string; lineNumber: number }
  readonly selfSize: number
  readonly children: readonly SamplingNode[]
}

/** A minimal Chrome DevTools Protocol client over the inspector's WebSocket. */
async function inspector(port: number) {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json`)).json()) as {
    webSocketDebuggerUrl: string
  }[]
  const socket = new WebSocket(targets[0]!.webSocketDebuggerUrl)
  await new Promise((resolve) => socket.addEventListener('open', resolve, { once: true }))
  const waiting = new Map<number, (result: unknown) => void>()
  socket.addEventListener('message', (event) => {
    const reply = JSON.parse(String(event.data)) as { id?: number; result?: unknown }
    if (reply.id !== undefined) waiting.get(reply.id)?.(reply.result)
  })
  let lastId = 0
  return {
    call: <T>(method: string, params: object = {}) =>
      new Promise<T>((resolve) => {
        const id = ++lastId
        waiting.set(id, (result) => resolve(result as T))
        socket.send(JSON.stringify({ id, method, params }))
      }),
    close: () => socket.close(),
  }
}

/** Bytes by allocating function and by package, over the whole sampled tree. */
function bySite(root: SamplingNode): { sites: Map<string, number>; packages: Map<string, number> } {
  const sites = new Map<string, number>()
  const packages = new Map<string, number>()
  const visit = (node: SamplingNode) => {
    if (node.selfSize > 0) {
      const site = frameName(node.callFrame)
      sites.set(site, (sites.get(site) ?? 0) + node.selfSize)
      const pkg = packageOf(node.callFrame.url)
      packages.set(pkg, (packages.get(pkg) ?? 0) + node.selfSize)
    }
    node.children.forEach(visit)
  }
  visit(root)
  return { sites, packages }
}

function table(title: string, bytes: Map<string, number>, total: number, top: number): string {
  const rows = [...bytes]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, size]) => `${((100 * size) / total).toFixed(1).padStart(5)} %  ${name}`)
  return [title, ...rows].join('\n')
}

async function main(): Promise<void> {
  const role = values.role
  if (!ROLES.includes(role as Role)) throw new Error(`--role must be one of ${ROLES.join(', ')}`)
  const namespace = uniqueNamespace('survivors')
  const vhost = await createVhost('survivors')
  const [httpPort, inspectorPort] = await Promise.all([freePort(), freePort()])
  const env = isolatedEnv(vhost.url, namespace, {
    BAKE_TIME_SCALE: '0',
    LOG_LEVEL: 'info',
    PORT: String(httpPort),
    NODE_OPTIONS: roleNodeOptions(),
  })
  const others: RoleProcess[] = []
  const target = await startRole(role, env, {
    nodeArgs: [`--inspect=127.0.0.1:${inspectorPort}`],
  })
  try {
    for (const other of ROLES.filter((name) => name !== role))
      others.push(await startRole(other, env))

    const seconds = Number(values.seconds)
    const load = paced({
      url: `http://127.0.0.1:${httpPort}`,
      connections: 16,
      durationS: WARM_UP_S + seconds,
      post: { customer: 'survivors' },
      overallRate: Number(values.rate),
    })
    const devtools = await inspector(inspectorPort)
    await sleep(WARM_UP_S * 1000)
    // Objects a scavenge collects leave the profile (unless --all); those a full collection
    // collects stay.
    await devtools.call('HeapProfiler.startSampling', {
      samplingInterval: 8192,
      includeObjectsCollectedByMinorGC: values.all,
      includeObjectsCollectedByMajorGC: true,
    })
    await sleep(seconds * 1000)
    const { profile } = await devtools.call<{ profile: { head: SamplingNode } }>(
      'HeapProfiler.getSamplingProfile',
    )
    await devtools.call('HeapProfiler.stopSampling')
    devtools.close()
    await load

    const { sites, packages } = bySite(profile.head)
    const total = [...sites.values()].reduce((a, b) => a + b, 0)
    const top = Number(values.top)
    console.log(
      `${role}: ${(total / 1e6).toFixed(1)} MB ${values.all ? 'allocated' : 'outlived a scavenge'} in ${seconds} s ` +
        `at ${values.rate} orders/s (sampled)\n`,
    )
    console.log(table('by package', packages, total, top))
    console.log()
    console.log(table('by allocating function', sites, total, top))
  } finally {
    await target.stop()
    await Promise.all(others.map((other) => other.stop()))
    await dropNamespace(namespace)
    await vhost.drop()
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
