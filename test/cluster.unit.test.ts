import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1'
import { Job } from 'kubernetes-models/batch/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1'
import { ConfigMap, Secret, Service, ServiceAccount } from 'kubernetes-models/v1'
import type { IContainer } from 'kubernetes-models/v1/Container'
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec'
import type { IProbe } from 'kubernetes-models/v1/Probe'
import { parseAllDocuments } from 'yaml'
import { DockerfileParser, type Copy } from 'dockerfile-ast'
import ignore from '@balena/dockerignore'
import { variables } from '../src/platform/config'
import { ROLE_NODE_OPTIONS } from '../src/platform/heap'

/**
 * The cluster can't be started here (no Docker, Kubernetes or Tilt), so this checks offline what
 * `tilt up` would otherwise find out late: k8s/ against the Kubernetes schemas, the references
 * between the manifests, the app's own configuration and endpoints, the Tiltfile and the
 * Dockerfile.
 */

const ROOT = join(__dirname, '..')
const ROLES = ['reception', 'baker', 'projector'] as const
const BAKERY_IMAGE = 'bakery'
// The official RabbitMQ image writes outside its data directory at startup (see k8s/rabbitmq.yaml).
const WRITABLE_ROOT_ALLOWED = new Set(['rabbitmq'])
// A role's RSS beyond its V8 heap (code, buffers, the binary): about 50 MB, measured idle.
const NON_HEAP_MB = 64

type LabelSelector = NonNullable<NetworkPolicy['spec']>['podSelector']

interface Workload {
  readonly kind: 'Deployment' | 'StatefulSet' | 'Job'
  readonly name: string
  readonly replicas: number
  readonly podLabels: Record<string, string>
  readonly selector: LabelSelector | undefined
  readonly pod: IPodSpec
  readonly claimTemplates: readonly string[]
  readonly serviceName: string | undefined
}

interface Cluster {
  readonly files: readonly string[]
  readonly objects: readonly { kind: string; name: string; file: string }[]
  readonly workloads: readonly Workload[]
  readonly services: readonly Service[]
  readonly configMaps: ReadonlyMap<string, Record<string, string>>
  readonly secrets: ReadonlyMap<string, Record<string, string>>
  readonly policies: readonly NetworkPolicy[]
  readonly budgets: readonly PodDisruptionBudget[]
  readonly serviceAccounts: readonly ServiceAccount[]
  readonly roles: readonly Role[]
  readonly roleBindings: readonly RoleBinding[]
}

function loadCluster(): Cluster {
  const files = readdirSync(join(ROOT, 'k8s'))
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => `k8s/${f}`)
  const objects: { kind: string; name: string; file: string }[] = []
  const workloads: Workload[] = []
  const services: Service[] = []
  const configMaps = new Map<string, Record<string, string>>()
  const secrets = new Map<string, Record<string, string>>()
  const policies: NetworkPolicy[] = []
  const budgets: PodDisruptionBudget[] = []
  const serviceAccounts: ServiceAccount[] = []
  const roles: Role[] = []
  const roleBindings: RoleBinding[] = []
  for (const file of files) {
    for (const doc of parseAllDocuments(readFileSync(join(ROOT, file), 'utf8'))) {
      assert.deepEqual(doc.errors, [], `${file} is not valid YAML`)
      const raw: unknown = doc.toJS()
      if (raw === null) continue
      const model = toModel(raw, file)
      const name = model.metadata?.name
      try {
        model.validate()
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error)
        assert.fail(`${file}: ${model.kind} ${name} breaks the Kubernetes schema: ${reason}`)
      }
      assert.ok(name, `${file}: a ${model.kind} without metadata.name`)
      objects.push({ kind: model.kind, name, file })
      if (model instanceof Service) services.push(model)
      else if (model instanceof ConfigMap) configMaps.set(name, model.data ?? {})
      else if (model instanceof Secret) secrets.set(name, secretValues(model))
      else if (model instanceof NetworkPolicy) policies.push(model)
      else if (model instanceof PodDisruptionBudget) budgets.push(model)
      else if (model instanceof ServiceAccount) serviceAccounts.push(model)
      else if (model instanceof Role) roles.push(model)
      else if (model instanceof RoleBinding) roleBindings.push(model)
      else workloads.push(toWorkload(model, name, file))
    }
  }
  return {
    files,
    objects,
    workloads,
    services,
    configMaps,
    secrets,
    policies,
    budgets,
    serviceAccounts,
    roles,
    roleBindings,
  }
}

function toModel(raw: unknown, file: string) {
  if (Deployment.is(raw)) return new Deployment(raw)
  if (StatefulSet.is(raw)) return new StatefulSet(raw)
  if (Job.is(raw)) return new Job(raw)
  if (Service.is(raw)) return new Service(raw)
  if (ConfigMap.is(raw)) return new ConfigMap(raw)
  if (Secret.is(raw)) return new Secret(raw)
  if (NetworkPolicy.is(raw)) return new NetworkPolicy(raw)
  if (PodDisruptionBudget.is(raw)) return new PodDisruptionBudget(raw)
  if (ServiceAccount.is(raw)) return new ServiceAccount(raw)
  if (Role.is(raw)) return new Role(raw)
  if (RoleBinding.is(raw)) return new RoleBinding(raw)
  const { apiVersion, kind } = (raw ?? {}) as { apiVersion?: unknown; kind?: unknown }
  assert.fail(`${file}: no schema here for apiVersion ${String(apiVersion)} kind ${String(kind)}`)
}

function toWorkload(model: Deployment | StatefulSet | Job, name: string, file: string): Workload {
  const pod = model.spec?.template.spec
  assert.ok(pod, `${file}: ${model.kind} ${name} has no pod spec`)
  const common = { name, pod, podLabels: model.spec?.template.metadata?.labels ?? {} }
  if (model instanceof Job) {
    return {
      ...common,
      kind: 'Job',
      replicas: 1,
      selector: undefined,
      claimTemplates: [],
      serviceName: undefined,
    }
  }
  return {
    ...common,
    kind: model.kind,
    replicas: model.spec?.replicas ?? 1,
    selector: model.spec?.selector,
    claimTemplates:
      model instanceof StatefulSet
        ? (model.spec?.volumeClaimTemplates ?? []).map((t) => t.metadata?.name ?? '')
        : [],
    serviceName: model instanceof StatefulSet ? model.spec?.serviceName : undefined,
  }
}

function secretValues(secret: Secret): Record<string, string> {
  const values: Record<string, string> = { ...secret.stringData }
  for (const [key, b64] of Object.entries(secret.data ?? {})) {
    values[key] = Buffer.from(b64, 'base64').toString('utf8')
  }
  return values
}

function matches(selector: LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (!selector) return false
  const byLabel = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v)
  return (
    byLabel &&
    (selector.matchExpressions ?? []).every(({ key, operator, values = [] }) => {
      const value = labels[key]
      switch (operator) {
        case 'In':
          return value !== undefined && values.includes(value)
        case 'NotIn':
          return value === undefined || !values.includes(value)
        case 'Exists':
          return value !== undefined
        case 'DoesNotExist':
          return value === undefined
        default:
          return assert.fail(`unknown selector operator ${operator}`)
      }
    })
  )
}

function containers(w: Workload): IContainer[] {
  return [...(w.pod.initContainers ?? []), ...w.pod.containers]
}

function containerPort(c: IContainer, port: string | number): number | undefined {
  const found = (c.ports ?? []).find((p) => p.name === port || p.containerPort === port)
  return found?.containerPort
}

function probePort(probe: IProbe): string | number | undefined {
  return probe.httpGet?.port ?? probe.tcpSocket?.port ?? probe.grpc?.port
}

/** Kubernetes expands $(NAME) from variables defined before; anything else stays literally. */
function expand(text: string, env: ReadonlyMap<string, string>): string {
  return text.replace(
    /\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
    (ref, name: string) => env.get(name) ?? ref,
  )
}

/** The environment a container starts with, in Kubernetes' order: envFrom first, then env. */
function environment(c: IContainer, cluster: Cluster): Map<string, string> {
  const env = new Map<string, string>()
  for (const source of c.envFrom ?? []) {
    const ref = source.configMapRef ?? source.secretRef
    assert.ok(ref?.name, `${c.name}: envFrom without a name`)
    const data = (source.configMapRef ? cluster.configMaps : cluster.secrets).get(ref.name)
    assert.ok(data, `${c.name}: envFrom refers to ${ref.name}, which k8s/ does not define`)
    for (const [k, v] of Object.entries(data)) env.set(k, v)
  }
  for (const { name, value, valueFrom } of c.env ?? []) {
    if (value !== undefined) {
      env.set(name, expand(value, env))
    } else if (valueFrom?.secretKeyRef ?? valueFrom?.configMapKeyRef) {
      const ref = valueFrom.secretKeyRef ?? valueFrom.configMapKeyRef
      const store = valueFrom.secretKeyRef ? cluster.secrets : cluster.configMaps
      const found = store.get(ref?.name ?? '')?.[ref?.key ?? '']
      assert.ok(
        found !== undefined,
        `${c.name}: ${name} refers to missing ${ref?.name}/${ref?.key}`,
      )
      env.set(name, found)
    } else {
      env.set(name, `<${name} from the downward API>`)
    }
  }
  return env
}

function quantity(q: string | number | undefined): number {
  if (q === undefined) return NaN
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?$/.exec(String(q))
  if (!m) return NaN
  const scale = { m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 }[m[2] ?? ''] ?? 1
  return Number(m[1]) * scale
}

function role(cluster: Cluster, name: (typeof ROLES)[number]): { w: Workload; c: IContainer } {
  const w = cluster.workloads.find((x) => x.kind === 'Deployment' && x.name === name)
  assert.ok(w, `no Deployment ${name}`)
  const c = w.pod.containers.find((x) => x.image === BAKERY_IMAGE)
  assert.ok(c, `Deployment ${name} has no container running the ${BAKERY_IMAGE} image`)
  return { w, c }
}

function serviceFor(cluster: Cluster, host: string): Service {
  const svc = cluster.services.find((s) => s.metadata?.name === host)
  assert.ok(svc, `no Service named ${host}`)
  return svc
}

// The Tiltfile is Starlark, which no maintained JavaScript parser reads (Tilt embeds Go's
// go.starlark.net). These few helpers find the calls the checks need: a call's argument text by
// balanced brackets, its string literals and its keyword arguments. They stay, for that reason.

/** The Starlark source without comments, so prose can't pass for code. */
function tiltfile(): string {
  return readFileSync(join(ROOT, 'Tiltfile'), 'utf8')
    .split('\n')
    .map((line) => {
      let quote = ''
      for (let i = 0; i < line.length; i++) {
        const ch = line[i]
        if (quote) quote = ch === quote ? '' : quote
        else if (ch === '"' || ch === "'") quote = ch
        else if (ch === '#') return line.slice(0, i)
      }
      return line
    })
    .join('\n')
}

/** The argument text of every call to `fn`, matched by parentheses outside string literals. */
function calls(source: string, fn: string): string[] {
  const found: string[] = []
  for (const m of source.matchAll(new RegExp(`(?<![\\w.])${fn}\\(`, 'g'))) {
    let depth = 1
    let quote = ''
    let i = m.index + m[0].length
    for (; i < source.length && depth > 0; i++) {
      const ch = source[i]
      if (quote) quote = ch === quote ? '' : quote
      else if (ch === '"' || ch === "'") quote = ch
      else if (ch === '(' || ch === '[') depth++
      else if (ch === ')' || ch === ']') depth--
    }
    found.push(source.slice(m.index + m[0].length, i - 1))
  }
  return found
}

function strings(text: string): string[] {
  return [...text.matchAll(/"([^"]*)"|'([^']*)'/g)].map((m) => m[1] ?? m[2] ?? '')
}

function kwarg(args: string, key: string): string | undefined {
  const m = new RegExp(`(?<!\\w)${key}\\s*=\\s*(\\[[^\\]]*\\]|"[^"]*"|'[^']*'|\\w+)`).exec(args)
  return m?.[1]
}

function firstString(args: string): string | undefined {
  return /^\s*["']/.test(args) ? strings(args)[0] : undefined
}

interface Stage {
  readonly name: string | undefined
  readonly from: string
  /** Each instruction as `KEYWORD arguments`, line continuations joined and flags left out. */
  readonly lines: readonly string[]
  /** What the stage copies from the build context (a COPY --from copies from another stage). */
  readonly copied: readonly string[]
}

/** The Dockerfile's stages, as dockerfile-ast (the parser of the Docker language server) reads it. */
function dockerStages(): Stage[] {
  const file = DockerfileParser.parse(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))
  const froms = file.getFROMs()
  return froms.map((from, i) => {
    const [start, end] = [from.getRange().start.line, froms[i + 1]?.getRange().start.line]
    const own = file.getInstructions().filter((instruction) => {
      const line = instruction.getRange().start.line
      return line > start && (end === undefined || line < end)
    })
    return {
      name: from.getBuildStage() ?? undefined,
      from: from.getImage() ?? '',
      lines: own.map((i) => `${i.getKeyword()} ${i.getArgumentsContent() ?? ''}`),
      copied: own
        .filter((i): i is Copy => i.getKeyword() === 'COPY' && !(i as Copy).getFromFlag())
        .flatMap((copy) =>
          copy
            .getArguments()
            .slice(0, -1)
            .map((a) => a.getValue()),
        ),
    }
  })
}

function instruction(stage: Stage, name: string): string | undefined {
  const line = stage.lines.findLast((l) => l.toUpperCase().startsWith(`${name} `))
  return line?.slice(name.length + 1).trim()
}

function execForm(text: string | undefined): string[] | undefined {
  if (!text?.startsWith('[')) return undefined
  const parsed: unknown = JSON.parse(text)
  return Array.isArray(parsed) && parsed.every((s) => typeof s === 'string') ? parsed : undefined
}

const cluster = loadCluster()

/** The RabbitMQ nodes a role's AMQP_URL names, read as the config module reads them. */
function rabbitNodes(name: (typeof ROLES)[number]): readonly URL[] {
  const value = environment(role(cluster, name).c, cluster).get('AMQP_URL')
  assert.ok(value, `${name}: AMQP_URL unset, so it would use ${variables.AMQP_URL.default}`)
  const decoded = variables.AMQP_URL.codec.decode(value)
  assert.ok(decoded._tag === 'Right', `${name}: AMQP_URL=${value} would not start`)
  return decoded.right
}

describe('k8s/ manifests', () => {
  it('validate against the Kubernetes schemas, one name per kind', () => {
    assert.ok(cluster.objects.length > 0)
    const keys = cluster.objects.map((o) => `${o.kind}/${o.name}`)
    assert.deepEqual(
      keys.filter((k, i) => keys.indexOf(k) !== i),
      [],
      'duplicate objects',
    )
  })

  it('give every workload a selector that selects its own pods', () => {
    for (const w of cluster.workloads.filter((x) => x.kind !== 'Job')) {
      assert.ok(matches(w.selector, w.podLabels), `${w.kind} ${w.name}: selector misses its pods`)
    }
  })

  it('pin every image that Tilt does not build', () => {
    for (const w of cluster.workloads) {
      for (const c of containers(w)) {
        if (c.image === BAKERY_IMAGE) continue
        assert.match(
          c.image ?? '',
          /(:\d+\.\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})$/,
          `${w.name}/${c.name}`,
        )
      }
    }
  })

  it('give every container requests and limits, and every long-running one a readiness probe', () => {
    for (const w of cluster.workloads) {
      for (const c of containers(w)) {
        const where = `${w.name}/${c.name}`
        for (const r of ['cpu', 'memory']) {
          const request = quantity(c.resources?.requests?.[r])
          const limit = quantity(c.resources?.limits?.[r])
          assert.ok(request > 0 && limit >= request, `${where}: ${r} request/limit`)
        }
        // A Job's container runs to completion; no Service ever waits for it to be ready.
        if (w.kind !== 'Job') assert.ok(c.readinessProbe, `${where}: no readinessProbe`)
      }
    }
  })

  it('run every container unprivileged', () => {
    for (const w of cluster.workloads) {
      for (const c of containers(w)) {
        const where = `${w.name}/${c.name}`
        const sc = c.securityContext
        assert.ok(sc?.runAsNonRoot ?? w.pod.securityContext?.runAsNonRoot, `${where}: runAsNonRoot`)
        assert.notEqual(sc?.runAsUser ?? w.pod.securityContext?.runAsUser, 0, `${where}: uid 0`)
        assert.equal(sc?.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation`)
        assert.deepEqual(sc?.capabilities?.drop, ['ALL'], `${where}: capabilities`)
        assert.equal(sc?.capabilities?.add, undefined, `${where}: adds capabilities`)
        if (!WRITABLE_ROOT_ALLOWED.has(w.name)) {
          assert.equal(sc?.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`)
        }
      }
    }
  })

  it('probe ports that the container declares', () => {
    for (const w of cluster.workloads) {
      for (const c of containers(w)) {
        for (const probe of [c.readinessProbe, c.livenessProbe, c.startupProbe]) {
          const port = probe && probePort(probe)
          if (port === undefined) continue
          assert.ok(containerPort(c, port), `${w.name}/${c.name}: probe port ${port} not declared`)
        }
      }
    }
  })

  it('resolve every volume, ConfigMap, Secret and $(VAR) reference', () => {
    for (const w of cluster.workloads) {
      const volumes = new Map((w.pod.volumes ?? []).map((v) => [v.name, v]))
      for (const v of volumes.values()) {
        const cm = v.configMap?.name
        if (cm)
          assert.ok(cluster.configMaps.has(cm), `${w.name}: volume ${v.name} -> ConfigMap ${cm}`)
        const secret = v.secret?.secretName
        if (secret)
          assert.ok(cluster.secrets.has(secret), `${w.name}: volume ${v.name} -> Secret ${secret}`)
      }
      for (const c of containers(w)) {
        const env = environment(c, cluster)
        for (const [name, value] of env) {
          assert.doesNotMatch(
            value,
            /\$\(\w+\)/,
            `${w.name}/${c.name}: ${name} refers to an undefined variable`,
          )
        }
        for (const arg of [...(c.command ?? []), ...(c.args ?? [])]) {
          assert.doesNotMatch(expand(arg, env), /\$\(\w+\)/, `${w.name}/${c.name}: ${arg}`)
        }
        for (const mount of c.volumeMounts ?? []) {
          const where = `${w.name}/${c.name}: mount ${mount.name}`
          const volume = volumes.get(mount.name)
          assert.ok(volume ?? w.claimTemplates.includes(mount.name), `${where} has no volume`)
          const cm = volume?.configMap?.name
          if (cm && mount.subPath) {
            assert.ok(
              mount.subPath in (cluster.configMaps.get(cm) ?? {}),
              `${where}: no ${mount.subPath}`,
            )
          }
        }
      }
    }
  })

  it('point every Service at pods that have its target ports', () => {
    for (const svc of cluster.services) {
      const name = svc.metadata?.name ?? ''
      const selected = cluster.workloads.filter((w) =>
        matches({ matchLabels: svc.spec?.selector }, w.podLabels),
      )
      assert.ok(selected.length > 0, `Service ${name} selects no workload`)
      for (const w of selected) {
        for (const p of svc.spec?.ports ?? []) {
          const target = p.targetPort ?? p.port
          assert.ok(
            w.pod.containers.some((c) => containerPort(c, target) !== undefined),
            `Service ${name}: ${w.name} has no port ${target}`,
          )
        }
      }
    }
    for (const w of cluster.workloads.filter((x) => x.serviceName !== undefined)) {
      const svc = serviceFor(cluster, w.serviceName ?? '')
      assert.ok(matches({ matchLabels: svc.spec?.selector }, w.podLabels), `${w.name}: serviceName`)
    }
  })

  it('keep Redis and RabbitMQ on PersistentVolumeClaims, Redis with AOF and a password', () => {
    for (const name of ['redis', 'rabbitmq']) {
      const w = cluster.workloads.find((x) => x.kind === 'StatefulSet' && x.name === name)
      assert.ok(w, `no StatefulSet ${name}`)
      const mounts = w.pod.containers.flatMap((c) => c.volumeMounts ?? [])
      assert.ok(
        mounts.some((m) => w.claimTemplates.includes(m.name)),
        `${name}: no PVC mounted`,
      )
    }
    const redis = cluster.workloads.find((x) => x.name === 'redis')?.pod.containers[0]
    assert.ok(redis)
    const args = [...(redis.command ?? []), ...(redis.args ?? [])]
    const after = (flag: string) => args[args.indexOf(flag) + 1]
    assert.equal(after('--appendonly'), 'yes')
    const dataMount = redis.volumeMounts?.find((m) => m.mountPath === after('--dir'))
    assert.equal(dataMount?.name, 'data', 'the AOF directory is not the PVC')
    const password = expand(after('--requirepass') ?? '', environment(redis, cluster))
    assert.equal(password, cluster.secrets.get('bakery-credentials')?.['redis-password'])
  })

  it('run Redis with maxmemory below its memory limit and noeviction: full, it refuses writes and loses nothing', () => {
    const redis = cluster.workloads.find((x) => x.name === 'redis')?.pod.containers[0]
    assert.ok(redis)
    const args = [...(redis.command ?? []), ...(redis.args ?? [])]
    const after = (flag: string) => args[args.indexOf(flag) + 1]
    assert.equal(after('--maxmemory-policy'), 'noeviction', 'an evicting policy would drop events')
    const maxmemory = /^(\d+)mb$/.exec(after('--maxmemory') ?? '')
    assert.ok(maxmemory, `--maxmemory ${after('--maxmemory')} is not <n>mb`)
    const limitMb = quantity(redis.resources?.limits?.memory) / 2 ** 20
    // Room beside the data for client buffers and the fork that rewrites the AOF.
    assert.ok(
      Number(maxmemory[1]) <= limitMb * 0.8,
      `--maxmemory ${maxmemory[1]}mb leaves too little of the ${limitMb} MiB limit`,
    )
  })

  it('keep every password out of ConfigMaps and literal values', () => {
    const secretValuesAll = [...cluster.secrets.values()].flatMap((s) => Object.values(s))
    const passwords = [...cluster.secrets.values()].flatMap((s) =>
      Object.entries(s).flatMap(([k, v]) => (/password/i.test(k) ? [v] : [])),
    )
    assert.ok(passwords.length >= 2)
    for (const [name, data] of cluster.configMaps) {
      for (const [key, value] of Object.entries(data)) {
        for (const p of passwords)
          assert.ok(!value.includes(p), `ConfigMap ${name}/${key} holds a password`)
        if (URL.canParse(value))
          assert.equal(new URL(value).password, '', `ConfigMap ${name}/${key}`)
      }
    }
    for (const w of cluster.workloads) {
      for (const c of containers(w)) {
        for (const { name, value } of c.env ?? []) {
          for (const p of passwords)
            assert.ok(!value?.includes(p), `${w.name}: ${name} spells out a password`)
        }
      }
    }
    // They are pasted into URLs unescaped.
    for (const v of secretValuesAll)
      assert.match(v, /^[\w.~-]+$/, 'a credential that is not URL-safe')
  })
})

describe('the Bakery roles in k8s/', () => {
  it('run the bakery image, one Deployment per role, baker and projector scaled out', () => {
    for (const name of ROLES) {
      const { w, c } = role(cluster, name)
      assert.deepEqual(c.args?.slice(0, 1), [name], `${name}: runs another role`)
      assert.equal(c.command, undefined, `${name}: command would bypass the image's entrypoint`)
      if (name !== 'reception')
        assert.ok(w.replicas >= 2, `${name}: competing consumers need replicas`)
    }
  })

  it('set only variables that the config module reads, each valid', () => {
    for (const name of ROLES) {
      const { c } = role(cluster, name)
      const env = environment(c, cluster)
      const declared = (c.env ?? []).map((e) => e.name)
      for (const [key, value] of env) {
        // OpenTelemetry's variables, and Node's own NODE_OPTIONS (checked further down).
        if (key.startsWith('OTEL_') || key === 'NODE_OPTIONS') continue
        if (key in variables) {
          const decoded = variables[key as keyof typeof variables].codec.decode(value)
          assert.equal(decoded._tag, 'Right', `${name}: ${key}=${value} would not start`)
          continue
        }
        // A helper is fine only when a later variable is built from it.
        const helperUsed = (c.env ?? [])
          .slice(declared.indexOf(key) + 1)
          .some((e) => e.value?.includes(`$(${key})`))
        assert.ok(
          helperUsed,
          `${name}: ${key} is neither a config variable, OTEL_*, nor used by one`,
        )
      }
      assert.ok(
        !env.has('OTEL_SERVICE_NAME'),
        `${name}: one OTEL_SERVICE_NAME would merge the roles in Jaeger`,
      )
    }
  })

  it('connect to the cluster Redis and RabbitMQ with the credentials in the Secret', () => {
    const credentials = cluster.secrets.get('bakery-credentials')
    assert.ok(credentials)
    for (const name of ROLES) {
      const env = environment(role(cluster, name).c, cluster)
      const value = env.get('REDIS_URL')
      assert.ok(value, `${name}: REDIS_URL unset, so it would use ${variables.REDIS_URL.default}`)
      const redis = new URL(value)
      assert.equal(redis.hostname, 'redis', `${name}: REDIS_URL host`)
      const ports = serviceFor(cluster, 'redis').spec?.ports?.map((p) => p.port) ?? []
      assert.ok(ports.includes(Number(redis.port)), `${name}: REDIS_URL port is not served`)
      assert.equal(redis.password, credentials['redis-password'], `${name}: REDIS_URL password`)
      for (const url of rabbitNodes(name)) {
        assert.equal(url.password, credentials['rabbitmq-password'], `${name}: AMQP_URL password`)
        assert.equal(url.username, credentials['rabbitmq-username'], `${name}: AMQP_URL user`)
      }
      const otlp = new URL(env.get('OTEL_EXPORTER_OTLP_ENDPOINT') ?? 'http://localhost:4318')
      const jaegerPorts = serviceFor(cluster, otlp.hostname).spec?.ports?.map((p) => p.port) ?? []
      assert.ok(jaegerPorts.includes(Number(otlp.port)), `${name}: OTLP endpoint ${otlp.href}`)
    }
  })

  it('probe /readyz and /healthz on the port the role listens on', () => {
    for (const name of ROLES) {
      const { c } = role(cluster, name)
      const env = environment(c, cluster)
      const portVar = name === 'reception' ? 'PORT' : 'HEALTH_PORT'
      const listens = Number(env.get(portVar) ?? variables[portVar].default)
      assert.ok(listens > 0, `${name}: ${portVar}=${listens} picks a random port`)
      for (const [probe, path] of [
        [c.readinessProbe, '/readyz'],
        [c.livenessProbe, '/healthz'],
      ] as const) {
        assert.equal(probe?.httpGet?.path, path, `${name}: probe path`)
        const port = probe.httpGet.port
        assert.equal(
          containerPort(c, port),
          listens,
          `${name}: ${path} probes ${port}, app listens on ${listens}`,
        )
      }
    }
  })

  it('give the drain time to finish before the kill', () => {
    for (const name of ROLES) {
      const { w, c } = role(cluster, name)
      const drain =
        Number(
          environment(c, cluster).get('SHUTDOWN_TIMEOUT_MS') ??
            variables.SHUTDOWN_TIMEOUT_MS.default,
        ) / 1000
      const preStop = c.lifecycle?.preStop?.exec?.command ?? []
      const pause = preStop[0] === 'sleep' ? Number(preStop[1]) : 0
      const grace = w.pod.terminationGracePeriodSeconds ?? 30
      assert.ok(
        grace > pause + drain,
        `${name}: grace ${grace}s <= ${pause}s preStop + ${drain}s drain`,
      )
    }
  })

  it('run every role with the heap that bakery dev and the bench use, within its memory limit', () => {
    for (const name of ROLES) {
      const { c } = role(cluster, name)
      const options = environment(c, cluster).get('NODE_OPTIONS') ?? ''
      assert.equal(options, ROLE_NODE_OPTIONS, `${name}: NODE_OPTIONS`)
      const mb = (flag: string) => Number(new RegExp(`--${flag}=(\\d+)`).exec(options)?.[1])
      // V8's young generation is three semi-spaces; the process needs room beyond its heap.
      const heap = mb('max-old-space-size') + 3 * mb('max-semi-space-size')
      const limit = quantity(c.resources?.limits?.memory) / 2 ** 20
      assert.ok(heap + NON_HEAP_MB <= limit, `${name}: a ${heap} MB heap in a ${limit} Mi limit`)
    }
  })

  it('run the load test against the reception Service', () => {
    const job = cluster.workloads.find((w) => w.kind === 'Job' && w.name === 'load-test')
    assert.ok(job)
    const c = job.pod.containers[0]
    assert.equal(c?.image, BAKERY_IMAGE)
    const args = c.args ?? []
    assert.equal(args[0], 'load')
    const url = new URL(args[args.indexOf('--url') + 1] ?? '')
    const ports = serviceFor(cluster, url.hostname).spec?.ports?.map((p) => p.port)
    assert.ok(ports?.includes(Number(url.port)), `load test aims at ${url.href}`)
  })
})

describe('RabbitMQ in k8s/', () => {
  const rabbit = cluster.workloads.find((w) => w.kind === 'StatefulSet' && w.name === 'rabbitmq')
  assert.ok(rabbit, 'no StatefulSet rabbitmq')
  const container = rabbit.pod.containers.find((c) => c.name === 'rabbitmq')
  assert.ok(container)
  const env = environment(container, cluster)
  const headless = serviceFor(cluster, rabbit.serviceName ?? '')
  const config = cluster.configMaps.get('rabbitmq-config') ?? {}
  /** rabbitmq.conf's `key = value` lines. */
  const conf = new Map(
    (config['30-bakery.conf'] ?? '')
      .split('\n')
      .map((line) => /^\s*([\w.]+)\s*=\s*(.*?)\s*$/.exec(line))
      .flatMap((m) => (m ? [[m[1]!, m[2]!] as const] : [])),
  )
  const mounted = (path: string) =>
    container.volumeMounts?.find((m) => m.mountPath === path)?.subPath

  it('runs three nodes, each with a DNS name published before it is ready', () => {
    assert.equal(rabbit.replicas, 3)
    assert.equal(headless.spec?.clusterIP, 'None', `${headless.metadata?.name} is not headless`)
    assert.equal(headless.spec?.publishNotReadyAddresses, true, 'nodes must find unready peers')
    const ports = (headless.spec?.ports ?? []).map((p) => p.targetPort)
    for (const port of ['amqp', 'epmd', 'cluster']) assert.ok(ports.includes(port), port)
  })

  it('forms one cluster by Kubernetes peer discovery, with the plugin, the RBAC and one cookie', () => {
    assert.equal(mounted('/etc/rabbitmq/enabled_plugins'), 'enabled_plugins')
    assert.match(
      config.enabled_plugins ?? '',
      /^\[([\w,\s]*\b)?rabbitmq_peer_discovery_k8s\b.*\]\.\s*$/,
    )
    assert.equal(mounted('/etc/rabbitmq/conf.d/30-bakery.conf'), '30-bakery.conf')
    assert.match(
      conf.get('cluster_formation.peer_discovery_backend') ?? '',
      /^(rabbit_peer_discovery_)?k8s$/,
    )
    assert.equal(conf.get('cluster_formation.k8s.service_name'), headless.metadata?.name)
    // address_type = hostname: a node is named after its DNS name under the headless Service.
    assert.equal(conf.get('cluster_formation.k8s.address_type'), 'hostname')
    assert.equal(env.get('RABBITMQ_USE_LONGNAME'), 'true')
    const suffix = env.get('K8S_HOSTNAME_SUFFIX') ?? ''
    assert.ok(suffix.startsWith(`.${headless.metadata?.name}.`), suffix)
    assert.equal(env.get('RABBITMQ_NODENAME'), `rabbit@${env.get('MY_POD_NAME')}${suffix}`)

    const account = rabbit.pod.serviceAccountName
    assert.ok(
      cluster.serviceAccounts.some((a) => a.metadata?.name === account),
      `${account}`,
    )
    assert.notEqual(rabbit.pod.automountServiceAccountToken, false, 'peer discovery needs a token')
    const granted = cluster.roleBindings
      .filter((b) => b.subjects?.some((s) => s.kind === 'ServiceAccount' && s.name === account))
      .flatMap((b) => cluster.roles.filter((r) => r.metadata?.name === b.roleRef.name))
      .flatMap((r) => r.rules ?? [])
    assert.ok(
      granted.some(
        (rule) =>
          rule.apiGroups?.includes('') &&
          rule.resources?.includes('endpoints') &&
          rule.verbs.includes('get'),
      ),
      `${account} may not get endpoints`,
    )

    const cookie = cluster.secrets.get('bakery-credentials')?.['rabbitmq-erlang-cookie']
    assert.ok(cookie, 'no Erlang cookie in the Secret')
    for (const name of ['RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS', 'RABBITMQ_CTL_ERL_ARGS'])
      assert.match(env.get(name) ?? '', new RegExp(`-setcookie ${cookie}\\b`), name)
  })

  it('keeps a majority of the nodes through voluntary disruptions', () => {
    const budgets = cluster.budgets.filter((b) => matches(b.spec?.selector, rabbit.podLabels))
    assert.equal(budgets.length, 1, 'one PodDisruptionBudget for the RabbitMQ pods')
    const majority = Math.floor(rabbit.replicas / 2) + 1
    const { minAvailable, maxUnavailable } = budgets[0]!.spec ?? {}
    assert.ok(
      minAvailable === majority || maxUnavailable === rabbit.replicas - majority,
      `minAvailable ${minAvailable} / maxUnavailable ${maxUnavailable}: a drain may take the majority`,
    )
  })

  it('gives every role every node, and quorum queues', () => {
    const nodes = Array.from(
      { length: rabbit.replicas },
      (_, i) => `${rabbit.name}-${i}.${headless.metadata?.name}`,
    )
    const served = (headless.spec?.ports ?? []).map((p) => p.port)
    for (const name of ROLES) {
      const urls = rabbitNodes(name)
      assert.deepEqual(urls.map((u) => u.hostname).sort(), nodes, `${name}: AMQP_URL nodes`)
      for (const url of urls)
        assert.ok(served.includes(Number(url.port)), `${name}: ${url.host} is not served`)
      assert.equal(environment(role(cluster, name).c, cluster).get('QUEUE_TYPE'), 'quorum')
    }
  })
})

describe('NetworkPolicies', () => {
  const pods = cluster.workloads.map((w) => ({ name: w.name, labels: w.podLabels, w }))
  /** Who may open a connection to `target` on `port`: pod names, or '*' for anyone. */
  function allowed(target: (typeof pods)[number], port: number): Set<string> {
    const sources = new Set<string>()
    for (const policy of cluster.policies) {
      if (!matches(policy.spec?.podSelector, target.labels)) continue
      for (const rule of policy.spec?.ingress ?? []) {
        const ports = rule.ports?.map((p) =>
          containerPort(target.w.pod.containers[0] ?? { name: '' }, p.port ?? ''),
        )
        if (ports && !ports.includes(port)) continue
        if (!rule.from) sources.add('*')
        for (const peer of rule.from ?? []) {
          if (peer.ipBlock ?? peer.namespaceSelector) sources.add('*')
          for (const p of pods) if (matches(peer.podSelector, p.labels)) sources.add(p.name)
        }
      }
    }
    return sources
  }
  const portOf = (name: string, portName: string) => {
    const w = pods.find((p) => p.name === name)
    const port = w && containerPort(w.w.pod.containers[0] ?? { name: '' }, portName)
    assert.ok(w && port, `${name} has no port ${portName}`)
    return { pod: w, port }
  }

  it('select pods that exist, by ports that exist', () => {
    for (const policy of cluster.policies) {
      const selector = policy.spec?.podSelector
      const empty = !selector?.matchLabels && !selector?.matchExpressions
      const selected = pods.filter((p) => empty || matches(selector, p.labels))
      assert.ok(selected.length > 0, `${policy.metadata?.name} selects no pod`)
      for (const rule of policy.spec?.ingress ?? []) {
        for (const peer of rule.from ?? []) {
          if (peer.podSelector) {
            assert.ok(
              pods.some((p) => matches(peer.podSelector, p.labels)),
              `${policy.metadata?.name}: peer`,
            )
          }
        }
        for (const { port } of rule.ports ?? []) {
          for (const p of selected) {
            assert.ok(
              p.w.pod.containers.some((c) => containerPort(c, port ?? '') !== undefined),
              `${policy.metadata?.name}: ${p.name} has no port ${port}`,
            )
          }
        }
      }
    }
  })

  it('deny by default: every pod is isolated for ingress', () => {
    for (const p of pods) {
      assert.ok(
        cluster.policies.some((policy) => {
          const s = policy.spec?.podSelector
          const isolates = policy.spec?.policyTypes?.includes('Ingress') ?? true
          return isolates && ((!s?.matchLabels && !s?.matchExpressions) || matches(s, p.labels))
        }),
        `${p.name} accepts traffic from anywhere`,
      )
    }
  })

  it('let only the roles reach Redis and RabbitMQ, and Jaeger', () => {
    for (const [name, portName] of [
      ['redis', 'redis'],
      ['rabbitmq', 'amqp'],
      ['jaeger', 'otlp-http'],
    ] as const) {
      const { pod, port } = portOf(name, portName)
      assert.deepEqual([...allowed(pod, port)].sort(), [...ROLES].sort(), `who reaches ${name}`)
    }
  })

  it('let the RabbitMQ nodes, and only them, reach each other for clustering', () => {
    for (const portName of ['epmd', 'cluster']) {
      const { pod, port } = portOf('rabbitmq', portName)
      assert.deepEqual([...allowed(pod, port)], ['rabbitmq'], `who reaches rabbitmq:${port}`)
    }
  })

  it('let anyone reach reception, and nothing else', () => {
    const { pod, port } = portOf('reception', 'http')
    assert.ok(allowed(pod, port).has('*'))
    for (const p of pods.filter((x) => x.name !== 'reception')) {
      for (const c of p.w.pod.containers) {
        for (const { containerPort: port } of c.ports ?? []) {
          assert.ok(!allowed(p, port).has('*'), `${p.name}:${port} is open to anyone`)
        }
      }
    }
  })
})

describe('Tiltfile', () => {
  const source = tiltfile()
  const builds = calls(source, 'docker_build')
  const resources = calls(source, 'k8s_resource')
  const locals = calls(source, 'local_resource')

  function buildifier(file: string) {
    return spawnSync(
      'npx',
      ['--no-install', 'buildifier', '--type=bzl', '--mode=check', '--lint=off', file],
      {
        cwd: ROOT,
        encoding: 'utf8',
      },
    )
  }

  it('parses and is formatted (buildifier), and a broken copy does not', () => {
    const real = buildifier('Tiltfile')
    assert.equal(real.status, 0, `run \`npx buildifier --type=bzl Tiltfile\`:\n${real.stderr}`)
    const dir = mkdtempSync(join(tmpdir(), 'tiltfile-'))
    try {
      const broken = join(dir, 'Tiltfile')
      writeFileSync(
        broken,
        readFileSync(join(ROOT, 'Tiltfile'), 'utf8').replace('k8s_resource(', 'k8s_resource(('),
      )
      assert.notEqual(
        buildifier(broken).status,
        0,
        'buildifier accepted a Tiltfile with a stray paren',
      )
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('builds every image that k8s/ runs unpinned, from stages the Dockerfile has', () => {
    const refs = builds.map((b) => firstString(b))
    const used = new Set(cluster.workloads.flatMap((w) => containers(w).map((c) => c.image ?? '')))
    for (const image of used) {
      if (!/[:@]/.test(image)) assert.ok(refs.includes(image), `nothing builds ${image}`)
    }
    for (const ref of refs)
      assert.ok(ref && used.has(ref), `docker_build(${ref}) is used by nothing`)
    const stages = dockerStages().map((s) => s.name)
    for (const b of builds) {
      const target = strings(kwarg(b, 'target') ?? '""')[0]
      if (target) assert.ok(stages.includes(target), `no Dockerfile stage ${target}`)
    }
  })

  it('loads every file in k8s/, and names only files that exist', () => {
    const manifests = strings(/MANIFESTS\s*=\s*\[([^\]]*)\]/.exec(source)?.[1] ?? '')
    assert.deepEqual([...manifests].sort(), [...cluster.files], 'MANIFESTS and k8s/ differ')
    const paths = [
      ...manifests,
      ...builds.flatMap((b) => strings(kwarg(b, 'dockerfile') ?? '')),
      ...calls(source, 'sync').map((s) => strings(s)[0] ?? ''),
      ...calls(source, 'run').flatMap((r) => strings(kwarg(r, 'trigger') ?? '')),
      ...locals.flatMap((l) => strings(kwarg(l, 'deps') ?? '')),
    ]
    assert.ok(paths.length > manifests.length)
    for (const p of paths)
      assert.ok(existsSync(join(ROOT, p)), `the Tiltfile names ${p}, which does not exist`)
  })

  it('syncs into the image’s working directory', () => {
    const workdir = dockerStages()
      .flatMap((s) => s.lines)
      .find((l) => l.startsWith('WORKDIR '))
      ?.slice('WORKDIR '.length)
    assert.ok(workdir)
    for (const s of calls(source, 'sync')) assert.ok(strings(s)[1]?.startsWith(`${workdir}/`), s)
  })

  it('configures resources that exist, with labels, dependencies and port-forwards', () => {
    const workloads = new Set(cluster.workloads.map((w) => w.name))
    const names = new Set<string>()
    for (const r of resources) {
      const workload = firstString(r) ?? strings(kwarg(r, 'workload') ?? '')[0]
      const name = workload ?? strings(kwarg(r, 'new_name') ?? '')[0]
      assert.ok(name, `k8s_resource(${r}) has no name`)
      if (workload) assert.ok(workloads.has(workload), `k8s_resource: no workload ${workload}`)
      names.add(name)
    }
    for (const l of locals) names.add(firstString(l) ?? '')
    for (const r of [...resources, ...locals]) {
      const labels = strings(kwarg(r, 'labels') ?? '')
      assert.ok(labels.length > 0, `no labels on ${r.slice(0, 40)}`)
      for (const dep of strings(kwarg(r, 'resource_deps') ?? '')) {
        assert.ok(names.has(dep), `resource_deps names ${dep}, which is no resource`)
      }
      const w = cluster.workloads.find((x) => x.name === firstString(r))
      for (const m of r.matchAll(/port_forward\((\d+),\s*(\d+)/g)) {
        assert.ok(w, `port_forward on ${r.slice(0, 40)}, which is no workload`)
        const port = Number(m[2])
        assert.ok(
          w.pod.containers.some((c) => containerPort(c, port)),
          `${w.name} has no port ${port}`,
        )
      }
    }
    const claimed = resources.flatMap((r) => strings(kwarg(r, 'objects') ?? ''))
    for (const o of cluster.objects) {
      if (['Deployment', 'StatefulSet', 'Job', 'Service'].includes(o.kind)) continue
      assert.ok(
        claimed.includes(`${o.name}:${o.kind.toLowerCase()}`),
        `${o.kind} ${o.name} is in no resource`,
      )
    }
    for (const selector of claimed) {
      assert.ok(
        cluster.objects.some((o) => `${o.name}:${o.kind.toLowerCase()}` === selector),
        `objects names ${selector}, which k8s/ does not define`,
      )
    }
  })

  it('starts the roles after Redis and RabbitMQ, forwards the UIs, and leaves the load test to a click', () => {
    const resource = (name: string) => {
      const r = resources.find((x) => firstString(x) === name)
      assert.ok(r, `no k8s_resource("${name}")`)
      return r
    }
    for (const name of ROLES) {
      const deps = strings(kwarg(resource(name), 'resource_deps') ?? '')
      assert.ok(
        deps.includes('redis') && deps.includes('rabbitmq'),
        `${name} does not wait for its stores`,
      )
    }
    for (const [name, port] of [
      ['reception', 8000],
      ['jaeger', 16686],
      ['rabbitmq', 15672],
    ] as const) {
      assert.match(
        resource(name),
        new RegExp(`port_forward\\(${port},`),
        `${name}: localhost:${port}`,
      )
    }
    const load = resource('load-test')
    assert.equal(kwarg(load, 'trigger_mode'), 'TRIGGER_MODE_MANUAL')
    assert.equal(kwarg(load, 'auto_init'), 'False')
    const scripts = (
      JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
        scripts: Record<string, string>
      }
    ).scripts
    for (const l of locals) {
      const script = /npm run ([\w:-]+)/.exec(strings(kwarg(l, 'cmd') ?? '')[0] ?? '')?.[1]
      assert.ok(
        script && script in scripts,
        `local_resource runs a missing npm script: ${l.slice(0, 60)}`,
      )
    }
  })

  it('runs the Job, in development, with the dev entrypoint minus --watch', () => {
    const dev = dockerStages().find((s) => s.name === 'dev')
    assert.ok(dev)
    const entrypoint = execForm(instruction(dev, 'ENTRYPOINT'))
    assert.ok(
      entrypoint && entrypoint.includes('--watch'),
      'the dev image would not restart on live_update',
    )
    const jobCommand = /\["command"\]\s*=\s*(\[[^\]]*\])/.exec(source)?.[1]
    assert.deepEqual(
      strings(jobCommand ?? ''),
      entrypoint.filter((a) => a !== '--watch'),
    )
  })
})

describe('Dockerfile', () => {
  const stages = dockerStages()
  const runtime = stages.at(-1)

  it('builds from pinned images only', () => {
    const names: (string | undefined)[] = []
    for (const s of stages) {
      if (!names.includes(s.from))
        assert.match(s.from, /:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$/, s.from)
      names.push(s.name)
    }
  })

  it('ships a runtime stage last, unprivileged, with production dependencies only', () => {
    assert.ok(runtime)
    assert.equal(runtime.name, 'runtime', 'the default target (the last stage) is not the runtime')
    const user = instruction(runtime, 'USER')
    assert.match(
      user ?? '',
      /^[1-9]\d*(:\d+)?$/,
      'USER must be a numeric non-root uid for runAsNonRoot',
    )
    assert.ok(
      runtime.lines.some((l) => /npm ci\b.*--omit=dev/.test(l)),
      'runtime installs dev dependencies',
    )
  })

  it('installs dependencies from the lockfile before copying the sources', () => {
    for (const s of stages) {
      const install = s.lines.findIndex((l) => /^RUN\b.*npm ci/.test(l))
      if (install < 0) continue
      const lockfile = s.lines.findIndex((l) => /^COPY\b.*package-lock\.json/.test(l))
      const sources = s.lines.findIndex((l) => /^COPY\b.*\bsrc\b/.test(l))
      assert.ok(
        lockfile >= 0 && lockfile < install,
        `${s.name}: npm ci before the lockfile is copied`,
      )
      assert.ok(sources < 0 || sources > install, `${s.name}: every source edit would reinstall`)
      // package.json's `prepare` builds from src/, which is not there yet: it would fail.
      assert.match(s.lines[install]!, /--ignore-scripts/, `${s.name}: npm ci runs prepare`)
    }
  })

  it('starts node itself, in exec form, so SIGTERM reaches it', () => {
    for (const s of stages.filter((x) => instruction(x, 'ENTRYPOINT') ?? instruction(x, 'CMD'))) {
      const entrypoint = execForm(instruction(s, 'ENTRYPOINT'))
      const cmd = execForm(instruction(s, 'CMD'))
      assert.ok(entrypoint && cmd, `${s.name}: ENTRYPOINT and CMD must be JSON arrays`)
      assert.equal(entrypoint[0], 'node', `${s.name}: PID 1 must be node, not npm or a shell`)
      assert.deepEqual(cmd, ['reception'])
    }
    const start = execForm(instruction(runtime ?? stages[0]!, 'ENTRYPOINT')) ?? []
    assert.deepEqual(start, ['node', 'dist/cli.js'])
  })

  it('gets only what it copies from a .dockerignore that keeps node_modules out', () => {
    const rules = ignore().add(readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n'))
    const ignored = (path: string) => rules.ignores(path)
    for (const p of ['node_modules', 'dist', '.git', 'k8s', 'test'])
      assert.ok(ignored(p), `${p} is sent`)
    const copied = stages.flatMap((s) => s.copied)
    assert.ok(copied.includes('src'))
    for (const p of copied) {
      assert.ok(!ignored(p), `the Dockerfile copies ${p}, which .dockerignore leaves out`)
      assert.ok(existsSync(join(ROOT, p)), `the Dockerfile copies ${p}, which does not exist`)
    }
  })
})
