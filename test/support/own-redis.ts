import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { freePort, waitFor } from '.'

/** A Redis of the test's own, with an append-only file, so it can be stopped and started. */
export class OwnRedis {
  private process: ChildProcess | undefined
  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly extraArgs: readonly string[],
  ) {}

  /** `extraArgs` go to redis-server as they are, e.g. `['--maxmemory', '2mb']`. */
  static async start(extraArgs: readonly string[] = []): Promise<OwnRedis> {
    const dir = await mkdtemp(join(tmpdir(), 'bakery-redis-'))
    const redis = new OwnRedis(await freePort(), dir, extraArgs)
    await redis.up()
    return redis
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`
  }

  async up(): Promise<void> {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) return
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--appendonly', 'yes']
    const child = spawn(
      'redis-server',
      [...args, '--dir', this.dir, '--save', '', ...this.extraArgs],
      {
        stdio: 'ignore',
      },
    )
    this.process = child
    await waitFor(`redis-server on ${this.port}`, async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited ${child.exitCode}`)
      const probe = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null })
      probe.on('error', () => undefined)
      try {
        await probe.connect()
        return (await probe.ping()) === 'PONG'
      } finally {
        probe.disconnect()
      }
    })
  }

  /** SIGTERM: Redis flushes its append-only file and exits, as on a restart. */
  async down(): Promise<void> {
    const child = this.process
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }

  async remove(): Promise<void> {
    await this.down()
    await rm(this.dir, { recursive: true, force: true })
  }
}
