import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, openSync, closeSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort, waitFor } from '.'

const run = promisify(execFile)

/**
 * A RabbitMQ cluster of the test's own: nodes with their own names, ports, data directories and
 * Erlang cookie in a temporary directory, never the shared `rabbit@localhost`. Each node runs in a
 * process group of its own, so that a kill -9 reaches all of it, and every node still running is
 * killed when the cluster is closed or the test process exits.
 */

// Debian's /usr/sbin wrappers switch root to the rabbitmq user, which would lose the cookie in HOME.
const BIN = ['/usr/lib/rabbitmq/bin', '/usr/sbin'].find((dir) =>
  existsSync(join(dir, 'rabbitmq-server')),
)

export interface RabbitNode {
  readonly name: string
  readonly port: number
  readonly isRunning: () => boolean
  /** Starts the node (again) and resolves once it accepts AMQP connections. */
  readonly start: () => Promise<void>
  /** `rabbitmqctl stop`: the node shuts down in order. */
  readonly stop: () => Promise<void>
  /** SIGKILL to the node's whole process group. */
  readonly kill: () => Promise<void>
}

export interface RabbitCluster {
  readonly nodes: readonly RabbitNode[]
  /** A vhost on the cluster; AMQP_URL naming every node, the first with credentials and vhost. */
  readonly addVhost: (name: string) => Promise<string>
  /** The node that leads a quorum queue, as a running node reports it. */
  readonly leaderOf: (vhost: string, queue: string) => Promise<RabbitNode>
  /** Each queue of a vhost: ready and unacknowledged counts, leader, members online. */
  readonly queueCounts: (vhost: string) => Promise<string>
  /** The node's own log, for a failure that explains itself. */
  readonly logOf: (node: RabbitNode) => Promise<string>
  readonly close: () => Promise<void>
  /** The command lines of any process still running one of the cluster's nodes (`pgrep -af`). */
  readonly leftovers: () => Promise<string[]>
}

export async function startRabbitCluster(size: number): Promise<RabbitCluster> {
  if (!BIN) throw new Error('rabbitmq-server is not installed (apt-get install rabbitmq-server)')
  const dir = await mkdtemp(join(tmpdir(), 'bakery-rabbit-'))
  const home = join(dir, 'home')
  await mkdir(home)
  await writeFile(join(home, '.erlang.cookie'), randomBytes(16).toString('hex'))
  await chmod(join(home, '.erlang.cookie'), 0o400)
  await writeFile(join(dir, 'enabled_plugins'), '[].\n')
  await writeFile(join(dir, 'rabbitmq-env.conf'), '')
  await writeFile(join(dir, 'rabbitmq.conf'), 'log.console = false\n')
  const id = randomBytes(3).toString('hex')
  const shared = {
    PATH: `${BIN}:${process.env.PATH ?? ''}`,
    HOME: home,
    LANG: 'C.UTF-8',
    ERL_EPMD_ADDRESS: '127.0.0.1',
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, 'advanced.config'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
  }
  const ctl = async (node: string, ...args: string[]) =>
    (await run(join(BIN, 'rabbitmqctl'), ['-n', node, '-q', ...args], { env: shared })).stdout

  const children = new Map<string, ChildProcess>()
  const killAll = () => {
    for (const child of children.values()) killGroup(child)
  }
  process.once('exit', killAll)

  const nodes: RabbitNode[] = []
  for (let i = 1; i <= size; i++) {
    const name = `bakery-${id}-${i}@localhost`
    const [port, distPort] = [await freePort(), await freePort()]
    const env = {
      ...shared,
      RABBITMQ_NODENAME: name,
      RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
      RABBITMQ_NODE_PORT: String(port),
      RABBITMQ_DIST_PORT: String(distPort),
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    }
    const exited = () => {
      const child = children.get(name)
      return !child || child.exitCode !== null || child.signalCode !== null
    }
    const gone = async () => {
      const child = children.get(name)
      if (child && !exited()) await new Promise((resolve) => child.once('exit', resolve))
      children.delete(name)
    }
    nodes.push({
      name,
      port,
      isRunning: () => !exited(),
      start: async () => {
        const out = openSync(join(dir, `${name}.out`), 'a')
        const child = spawn(join(BIN, 'rabbitmq-server'), [], {
          env,
          detached: true,
          stdio: ['ignore', out, out],
        })
        closeSync(out)
        children.set(name, child)
        await waitFor(
          `${name} to accept connections`,
          async () => {
            if (exited()) throw new Error(`${name} exited; see ${dir}`)
            return accepts(port)
          },
          { timeoutMs: 90_000, intervalMs: 200 },
        )
      },
      stop: async () => {
        await ctl(name, 'stop')
        await gone()
      },
      kill: async () => {
        const child = children.get(name)
        if (child) killGroup(child)
        await gone()
      },
    })
  }

  const close = async () => {
    killAll()
    await Promise.all(nodes.map((node) => node.kill()))
    process.removeListener('exit', killAll)
    await rm(dir, { recursive: true, force: true })
  }
  try {
    await Promise.all(nodes.map((node) => node.start()))
    const [first, ...others] = nodes as [RabbitNode, ...RabbitNode[]]
    for (const node of others) {
      await ctl(node.name, 'stop_app')
      // On a busy machine the first node may not answer the CLI in time: try again a while.
      await waitFor(
        `${node.name} to join ${first.name}`,
        async () => {
          await ctl(node.name, 'join_cluster', first.name).catch((error: Error) => {
            if (!/already_member/.test(error.message)) throw error
          })
          return true
        },
        { timeoutMs: 60_000, intervalMs: 2000 },
      )
      await ctl(node.name, 'start_app')
    }
    const status = JSON.parse(await ctl(first.name, 'cluster_status', '--formatter', 'json')) as {
      running_nodes: string[]
    }
    if (status.running_nodes.length !== size)
      throw new Error(`the cluster formed with ${status.running_nodes.join(', ')} only`)
  } catch (error) {
    await close()
    throw error
  }

  const running = () => {
    const node = nodes.find((n) => n.isRunning())
    if (!node) throw new Error('no node of the cluster is running')
    return node.name
  }
  /** The queues of `vhost` as a running node lists them: a line each, the name, then `columns`. */
  const listQueues = (vhost: string, ...columns: string[]) =>
    ctl(running(), 'list_queues', '--no-table-headers', '-p', vhost, 'name', ...columns)
  return {
    nodes,
    addVhost: async (vhost) => {
      await ctl(running(), 'add_vhost', vhost)
      await ctl(running(), 'set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*')
      const [first, ...others] = nodes.map((node) => `amqp://127.0.0.1:${node.port}`)
      const withVhost = `${first!.replace('amqp://', 'amqp://guest:guest@')}/${encodeURIComponent(vhost)}`
      return [withVhost, ...others].join(',')
    },
    leaderOf: async (vhost, queue) => {
      const rows = await listQueues(vhost, 'leader')
      const leader = rows
        .split('\n')
        .map((line) => line.split('\t'))
        .find(([name]) => name === queue)?.[1]
      const node = nodes.find((n) => n.name === leader)
      if (!node) throw new Error(`no leader of ${queue} in ${vhost}: ${rows}`)
      return node
    },
    queueCounts: async (vhost) =>
      (
        await listQueues(vhost, 'messages_ready', 'messages_unacknowledged', 'leader', 'online')
      ).trim(),
    logOf: (node) =>
      readFile(join(dir, 'log', `${node.name}.log`), 'utf8').catch((error: Error) => error.message),
    close,
    leftovers: async () => {
      // A node's command line names its HOME, in the cluster's directory; pgrep exits 1 when
      // nothing matches.
      const found = await run('pgrep', ['-af', home]).catch(() => ({ stdout: '' }))
      return found.stdout.split('\n').filter(Boolean)
    },
  }
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
  } catch {
    // The group is gone already.
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}
