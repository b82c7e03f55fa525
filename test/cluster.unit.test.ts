import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1'
import { CronJob, Job } from 'kubernetes-models/batch/v1'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1'
import {
  ConfigMap,
  PersistentVolumeClaim,
  Secret,
  Service,
  ServiceAccount,
} from 'kubernetes-models/v1'
import type { IContainer } from 'kubernetes-models/v1/Container'
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec'
import type { IProbe } from 'kubernetes-models/v1/Probe'
import { parseAllDocuments } from 'yaml'
import { DockerfileParser, type Copy } from 'dockerfile-ast'
import ignore from '@balena/dockerignore'
import { loadConfig, variables, type Config } from '../src/platform/config'
import { ROLE_NODE_OPTIONS } from '../src/platform/heap'
import { replicationOf } from '../src/platform/redis'
import { parseTime } from '../src/tools/tool'

/**
 * The cluster can't be started here (no Docker, Kubernetes or Tilt), so this checks offline what
 * `tilt up` would otherwise find out late: k8s/ against the Kubernetes schemas, the references
 * between the manifests, the app's own configuration and endpoints, the Tiltfile and the
 * Dockerfile. What `tilt up -- --redis-cluster` applies (k8s/redis-cluster/ in place of
 * k8s/redis.yaml) is checked as a cluster of its own, the same way.
 */

const ROOT = join(__dirname, '..')
const ROLES = ['reception', 'baker', 'projector'] as const
const BAKERY_IMAGE = 'bakery'
// The official RabbitMQ image writes outside its data directory at startup (see k8s/rabbitmq.yaml).
const WRITABLE_ROOT_ALLOWED = new Set(['rabbitmq'])
// A role's RSS beyond its V8 heap (code, buffers, the binary): about 50 MB, measured idle.
const NON_HEAP_MB = 64
/** The Redis Cluster option (`tilt up -- --redis-cluster`), and the one file of k8s/ it replaces. */
const OVERLAY = 'k8s/redis-cluster'
const REPLACED = 'k8s/redis.yaml'
/** The Job that makes the Redis Cluster's nodes one cluster. */
const BOOTSTRAP = 'redis-cluster-bootstrap'

type LabelSelector = NonNullable<NetworkPolicy['spec']>['podSelector']

interface Workload {
  readonly kind: 'Deployment' | 'StatefulSet' | 'Job' | 'CronJob'
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
  /** Files whose ConfigMaps are merged into those of the same name, as the Tiltfile does. */
  readonly patches: readonly string[]
  readonly objects: readonly { kind: string; name: string; file: string }[]
  readonly workloads: readonly Workload[]
  readonly cronJobs: readonly CronJob[]
  readonly services: readonly Service[]
  readonly claims: ReadonlyMap<string, PersistentVolumeClaim>
  readonly configMaps: ReadonlyMap<string, Record<string, string>>
  readonly secrets: ReadonlyMap<string, Record<string, string>>
  readonly policies: readonly NetworkPolicy[]
  readonly budgets: readonly PodDisruptionBudget[]
  readonly serviceAccounts: readonly ServiceAccount[]
  readonly roles: readonly Role[]
  readonly roleBindings: readonly RoleBinding[]
}

const yamlFiles = (dir: string) =>
  readdirSync(join(ROOT, dir))
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => `${dir}/${f}`)

/** A file's objects, each valid against its Kubernetes schema. */
function documents(file: string) {
  const models: ReturnType<typeof toModel>[] = []
  for (const doc of parseAllDocuments(readFileSync(join(ROOT, file), 'utf8'))) {
    assert.deepEqual(doc.errors, [], `${file} is not valid YAML`)
    const raw: unknown = doc.toJS()
    if (raw === null) continue
    const model = toModel(raw, file)
    try {
      model.validate()
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error)
      assert.fail(
        `${file}: ${model.kind} ${model.metadata?.name} breaks the Kubernetes schema: ${reason}`,
      )
    }
    assert.ok(model.metadata?.name, `${file}: a ${model.kind} without metadata.name`)
    models.push(model)
  }
  return models
}

function loadCluster(files: readonly string[], patches: readonly string[] = []): Cluster {
  const objects: { kind: string; name: string; file: string }[] = []
  const workloads: Workload[] = []
  const cronJobs: CronJob[] = []
  const services: Service[] = []
  const claims = new Map<string, PersistentVolumeClaim>()
  const configMaps = new Map<string, Record<string, string>>()
  const secrets = new Map<string, Record<string, string>>()
  const policies: NetworkPolicy[] = []
  const budgets: PodDisruptionBudget[] = []
  const serviceAccounts: ServiceAccount[] = []
  const roles: Role[] = []
  const roleBindings: RoleBinding[] = []
  for (const file of files) {
    for (const model of documents(file)) {
      const name = model.metadata?.name ?? ''
      objects.push({ kind: model.kind, name, file })
      if (model instanceof Service) services.push(model)
      else if (model instanceof PersistentVolumeClaim) claims.set(name, model)
      else if (model instanceof ConfigMap) configMaps.set(name, model.data ?? {})
      else if (model instanceof Secret) secrets.set(name, secretValues(model))
      else if (model instanceof NetworkPolicy) policies.push(model)
      else if (model instanceof PodDisruptionBudget) budgets.push(model)
      else if (model instanceof ServiceAccount) serviceAccounts.push(model)
      else if (model instanceof Role) roles.push(model)
      else if (model instanceof RoleBinding) roleBindings.push(model)
      else {
        if (model instanceof CronJob) cronJobs.push(model)
        workloads.push(toWorkload(model, name, file))
      }
    }
  }
  for (const file of patches) {
    for (const patch of documents(file)) {
      const name = patch.metadata?.name ?? ''
      assert.ok(
        patch instanceof ConfigMap && configMaps.has(name),
        `${file}: ${patch.kind} ${name} patches no ConfigMap of ${files.join(', ')}`,
      )
      configMaps.set(name, { ...configMaps.get(name), ...patch.data })
    }
  }
  return {
    files,
    patches,
    objects,
    workloads,
    cronJobs,
    services,
    claims,
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
  if (CronJob.is(raw)) return new CronJob(raw)
  if (Service.is(raw)) return new Service(raw)
  if (PersistentVolumeClaim.is(raw)) return new PersistentVolumeClaim(raw)
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

function toWorkload(
  model: Deployment | StatefulSet | Job | CronJob,
  name: string,
  file: string,
): Workload {
  const template =
    model instanceof CronJob ? model.spec?.jobTemplate.spec?.template : model.spec?.template
  const pod = template?.spec
  assert.ok(pod, `${file}: ${model.kind} ${name} has no pod spec`)
  const common = { name, pod, podLabels: template.metadata?.labels ?? {} }
  if (model instanceof Job || model instanceof CronJob) {
    return {
      ...common,
      kind: model.kind,
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

/** A Job, or a CronJob's Jobs: pods that run to completion, which no Service waits for. */
const runsToCompletion = (w: Workload) => w.kind === 'Job' || w.kind === 'CronJob'

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

/** Every container that runs the Bakery image (the roles, the load test, the archive). */
function bakeryContainers(cluster: Cluster): { w: Workload; c: IContainer }[] {
  return cluster.workloads.flatMap((w) =>
    w.pod.containers.filter((c) => c.image === BAKERY_IMAGE).map((c) => ({ w, c })),
  )
}

/** The Bakery containers that use Redis, each with the configuration it would start with. */
function redisClients(cluster: Cluster): { w: Workload; c: IContainer; config: Config }[] {
  return bakeryContainers(cluster).flatMap(({ w, c }) => {
    const env = environment(c, cluster)
    if (!env.has('REDIS_URL')) return []
    try {
      return [{ w, c, config: loadConfig(Object.fromEntries(env)) }]
    } catch (error) {
      return assert.fail(`${w.name}: would not start: ${String(error)}`)
    }
  })
}

/** The StatefulSets that run Redis: k8s/redis.yaml's, or the nodes of the Redis Cluster. */
function redisNodes(cluster: Cluster): Workload[] {
  return cluster.workloads.filter(
    (w) => w.kind === 'StatefulSet' && w.pod.containers[0]?.image?.startsWith('redis:'),
  )
}

/** The pods of a StatefulSet by their DNS names under its headless Service, with a port. */
function podAddresses(w: Workload, port: number): string[] {
  return Array.from({ length: w.replicas }, (_, i) => `${w.name}-${i}.${w.serviceName}:${port}`)
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

/**
 * The Tiltfile as Tilt runs it with these flags: of each `if <flag>:` (or `if not <flag>:`), only
 * the branch taken. Every other statement stays.
 */
function tiltfileWith(source: string, flags: Readonly<Record<string, boolean>>): string {
  const frames: { indent: number; keep: boolean; inElse: boolean }[] = []
  const kept: string[] = []
  for (const line of source.split('\n')) {
    const indent = line.search(/\S/)
    if (indent < 0) continue
    let top = frames.at(-1)
    while (top && indent <= top.indent) {
      if (indent === top.indent && !top.inElse && /^\s*else:\s*$/.test(line)) break
      frames.pop()
      top = frames.at(-1)
    }
    if (top && indent === top.indent) {
      // The else of an `if <flag>:`.
      top.inElse = true
      top.keep = !top.keep
      continue
    }
    const m = /^\s*if (not )?(\w+):\s*$/.exec(line)
    if (m?.[2] !== undefined && m[2] in flags) {
      frames.push({ indent, keep: flags[m[2]] === (m[1] === undefined), inElse: false })
      continue
    }
    if (frames.every((f) => f.keep)) kept.push(line)
  }
  return kept.join('\n')
}

/** The Tiltfile's upper-case names (one variant's): each bound to a list of strings or a string. */
function bindings(source: string): Map<string, string[]> {
  const bound = new Map<string, string[]>()
  for (const m of source.matchAll(/^\s*([A-Z][A-Z0-9_]*)\s*=\s*(\[[^\]]*\]|"[^"]*")/gm)) {
    assert.ok(!bound.has(m[1]!), `the Tiltfile binds ${m[1]} twice in one variant`)
    bound.set(m[1]!, strings(m[2]!))
  }
  return bound
}

/** The strings an expression of literals, lists and bound names (joined with +) comes to. */
function evaluate(expr: string, bound: ReadonlyMap<string, string[]>): string[] {
  return [...expr.matchAll(/"([^"]*)"|'([^']*)'|([A-Za-z_]\w*)/g)].flatMap((m) => {
    if (m[3] === undefined) return [m[1] ?? m[2] ?? '']
    const value = bound.get(m[3])
    assert.ok(value, `the Tiltfile uses ${m[3]}, which this variant does not bind`)
    return value
  })
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

const cluster = loadCluster(yamlFiles('k8s'))
/** The overlay's files whose every object names one of k8s/: merged into it, not applied alone. */
const overlayPatches = yamlFiles(OVERLAY).filter((file) =>
  documents(file).every((o) =>
    cluster.objects.some((b) => b.kind === o.kind && b.name === o.metadata?.name),
  ),
)
/** What `tilt up -- --redis-cluster` applies: k8s/ without k8s/redis.yaml, plus the overlay. */
const redisCluster = loadCluster(
  [
    ...cluster.files.filter((f) => f !== REPLACED),
    ...yamlFiles(OVERLAY).filter((f) => !overlayPatches.includes(f)),
  ].sort(),
  overlayPatches,
)
/** Each is checked as a whole: every reference in one resolves within it. */
const VARIANTS = [
  { name: 'k8s/', cluster, redisCluster: false },
  { name: `k8s/ with ${OVERLAY}/`, cluster: redisCluster, redisCluster: true },
] as const

/** The RabbitMQ nodes a role's AMQP_URL names, read as the config module reads them. */
function rabbitNodes(cluster: Cluster, name: (typeof ROLES)[number]): readonly URL[] {
  const value = environment(role(cluster, name).c, cluster).get('AMQP_URL')
  assert.ok(value, `${name}: AMQP_URL unset, so it would use ${variables.AMQP_URL.default}`)
  const decoded = variables.AMQP_URL.codec.decode(value)
  assert.ok(decoded._tag === 'Right', `${name}: AMQP_URL=${value} would not start`)
  return decoded.right
}

for (const { name: variant, cluster } of VARIANTS) {
  describe(`${variant}: manifests`, () => {
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
      for (const w of cluster.workloads.filter((x) => !runsToCompletion(x))) {
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
          if (!runsToCompletion(w)) assert.ok(c.readinessProbe, `${where}: no readinessProbe`)
        }
      }
    })

    it('run every container unprivileged', () => {
      for (const w of cluster.workloads) {
        for (const c of containers(w)) {
          const where = `${w.name}/${c.name}`
          const sc = c.securityContext
          assert.ok(
            sc?.runAsNonRoot ?? w.pod.securityContext?.runAsNonRoot,
            `${where}: runAsNonRoot`,
          )
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
            assert.ok(
              containerPort(c, port),
              `${w.name}/${c.name}: probe port ${port} not declared`,
            )
          }
        }
      }
    })

    it('resolve every volume, PersistentVolumeClaim, ConfigMap, Secret and $(VAR) reference', () => {
      for (const w of cluster.workloads) {
        const volumes = new Map((w.pod.volumes ?? []).map((v) => [v.name, v]))
        for (const v of volumes.values()) {
          const claim = v.persistentVolumeClaim?.claimName
          if (claim)
            assert.ok(cluster.claims.has(claim), `${w.name}: volume ${v.name} -> PVC ${claim}`)
          const cm = v.configMap?.name
          if (cm)
            assert.ok(cluster.configMaps.has(cm), `${w.name}: volume ${v.name} -> ConfigMap ${cm}`)
          const secret = v.secret?.secretName
          if (secret)
            assert.ok(
              cluster.secrets.has(secret),
              `${w.name}: volume ${v.name} -> Secret ${secret}`,
            )
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
        assert.ok(
          matches({ matchLabels: svc.spec?.selector }, w.podLabels),
          `${w.name}: serviceName`,
        )
      }
    })

    it('keep Redis and RabbitMQ on PersistentVolumeClaims, Redis with AOF and a password', () => {
      const stores = [...redisNodes(cluster), cluster.workloads.find((x) => x.name === 'rabbitmq')]
      assert.equal(stores.length, 2, 'one Redis StatefulSet and RabbitMQ')
      for (const w of stores) {
        assert.ok(w?.kind === 'StatefulSet', `${w?.name} is no StatefulSet`)
        const mounts = w.pod.containers.flatMap((c) => c.volumeMounts ?? [])
        assert.ok(
          mounts.some((m) => w.claimTemplates.includes(m.name)),
          `${w.name}: no PVC mounted`,
        )
      }
      for (const w of redisNodes(cluster)) {
        const redis = w.pod.containers[0]!
        const args = [...(redis.command ?? []), ...(redis.args ?? [])]
        const after = (flag: string) => args[args.indexOf(flag) + 1]
        assert.equal(after('--appendonly'), 'yes', `${w.name}: --appendonly`)
        const dataMount = redis.volumeMounts?.find((m) => m.mountPath === after('--dir'))
        assert.ok(
          dataMount && w.claimTemplates.includes(dataMount.name),
          `${w.name}: the AOF directory is not the PVC`,
        )
        const password = expand(after('--requirepass') ?? '', environment(redis, cluster))
        assert.equal(password, cluster.secrets.get('bakery-credentials')?.['redis-password'])
      }
    })

    it('run Redis with maxmemory below its memory limit and noeviction: full, it refuses writes and loses nothing', () => {
      assert.ok(redisNodes(cluster).length > 0)
      for (const w of redisNodes(cluster)) {
        const redis = w.pod.containers[0]!
        const args = [...(redis.command ?? []), ...(redis.args ?? [])]
        const after = (flag: string) => args[args.indexOf(flag) + 1]
        assert.equal(
          after('--maxmemory-policy'),
          'noeviction',
          'an evicting policy would drop events',
        )
        const maxmemory = /^(\d+)mb$/.exec(after('--maxmemory') ?? '')
        assert.ok(maxmemory, `--maxmemory ${after('--maxmemory')} is not <n>mb`)
        const limitMb = quantity(redis.resources?.limits?.memory) / 2 ** 20
        // Room beside the data for client buffers and the fork that rewrites the AOF.
        assert.ok(
          Number(maxmemory[1]) <= limitMb * 0.8,
          `--maxmemory ${maxmemory[1]}mb leaves too little of the ${limitMb} MiB limit`,
        )
      }
    })

    it('size Redis stream nodes for an order stream: three events in one node, no 4 KB preallocation', () => {
      assert.ok(redisNodes(cluster).length > 0)
      for (const w of redisNodes(cluster)) {
        const redis = w.pod.containers[0]!
        const args = [...(redis.command ?? []), ...(redis.args ?? [])]
        const bytes = Number(args[args.indexOf('--stream-node-max-bytes') + 1])
        // Below 4096 (the most Redis preallocates), and not so small that an order's three
        // entries (about 1.2 KB) take a second node.
        assert.ok(bytes >= 1280 && bytes < 4096, `${w.name}: --stream-node-max-bytes ${bytes}`)
      }
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

  describe(`${variant}: the Bakery containers`, () => {
    it('set only variables that the config module reads, each valid', () => {
      const checked = bakeryContainers(cluster)
      assert.ok(checked.length > ROLES.length, 'the roles, the load test and the archive')
      for (const { w, c } of checked) {
        const env = environment(c, cluster)
        const declared = (c.env ?? []).map((e) => e.name)
        for (const [key, value] of env) {
          // OpenTelemetry's variables, and Node's own NODE_OPTIONS (checked further down).
          if (key.startsWith('OTEL_') || key === 'NODE_OPTIONS') continue
          if (key in variables) {
            const decoded = variables[key as keyof typeof variables].codec.decode(value)
            assert.equal(decoded._tag, 'Right', `${w.name}: ${key}=${value} would not start`)
            continue
          }
          // A helper is fine only when a later variable is built from it.
          const helperUsed = (c.env ?? [])
            .slice(declared.indexOf(key) + 1)
            .some((e) => e.value?.includes(`$(${key})`))
          assert.ok(
            helperUsed,
            `${w.name}: ${key} is neither a config variable, OTEL_*, nor used by one`,
          )
        }
        assert.ok(
          !env.has('OTEL_SERVICE_NAME'),
          `${w.name}: one OTEL_SERVICE_NAME would merge the roles in Jaeger`,
        )
      }
    })

    it('connect to the Redis and RabbitMQ of these manifests with the credentials in the Secret', () => {
      const credentials = cluster.secrets.get('bakery-credentials')
      assert.ok(credentials)
      const clients = redisClients(cluster)
      assert.deepEqual(
        clients.map(({ w }) => w.name).sort(),
        [...ROLES, 'archive'].sort(),
        'the containers with a REDIS_URL',
      )
      const [store] = redisNodes(cluster)
      assert.ok(store, 'no Redis StatefulSet')
      for (const { w, config } of clients) {
        const redis = config.REDIS_URL
        const svc = serviceFor(cluster, redis.hostname)
        assert.ok(
          matches({ matchLabels: svc.spec?.selector }, store.podLabels),
          `${w.name}: REDIS_URL names ${redis.hostname}, which is not ${store.name}`,
        )
        const ports = svc.spec?.ports?.map((p) => p.port) ?? []
        assert.ok(ports.includes(Number(redis.port)), `${w.name}: REDIS_URL port is not served`)
        assert.equal(redis.password, credentials['redis-password'], `${w.name}: REDIS_URL password`)
      }
      for (const name of ROLES) {
        const env = environment(role(cluster, name).c, cluster)
        for (const url of rabbitNodes(cluster, name)) {
          assert.equal(url.password, credentials['rabbitmq-password'], `${name}: AMQP_URL password`)
          assert.equal(url.username, credentials['rabbitmq-username'], `${name}: AMQP_URL user`)
        }
        const otlp = new URL(env.get('OTEL_EXPORTER_OTLP_ENDPOINT') ?? 'http://localhost:4318')
        const jaegerPorts = serviceFor(cluster, otlp.hostname).spec?.ports?.map((p) => p.port) ?? []
        assert.ok(jaegerPorts.includes(Number(otlp.port)), `${name}: OTLP endpoint ${otlp.href}`)
      }
    })

    it('give every Redis client one store: the same partition count and the same nodes', () => {
      const clients = redisClients(cluster)
      const partitions = new Set(clients.map(({ config }) => config.BAKERY_PARTITIONS))
      assert.equal(
        partitions.size,
        1,
        `BAKERY_PARTITIONS ${[...partitions].join(' and ')}: a store takes one`,
      )
      assert.ok(Number.isInteger([...partitions][0]) && [...partitions][0]! >= 1)
      const nodes = new Set(
        clients.map(({ config }) =>
          variables.REDIS_CLUSTER_NODES.codec.encode(config.REDIS_CLUSTER_NODES),
        ),
      )
      assert.equal(nodes.size, 1, `REDIS_CLUSTER_NODES differs: ${[...nodes].join(' and ')}`)
    })
  })
}

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
      const urls = rabbitNodes(cluster, name)
      assert.deepEqual(urls.map((u) => u.hostname).sort(), nodes, `${name}: AMQP_URL nodes`)
      for (const url of urls)
        assert.ok(served.includes(Number(url.port)), `${name}: ${url.host} is not served`)
      assert.equal(environment(role(cluster, name).c, cluster).get('QUEUE_TYPE'), 'quorum')
    }
  })
})

for (const { name: variant, cluster, redisCluster: isCluster } of VARIANTS) {
  describe(`${variant}: NetworkPolicies`, () => {
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

    it('let only the roles reach RabbitMQ and Jaeger, and only the clients of Redis reach it', () => {
      const redis = redisNodes(cluster)[0]?.name ?? ''
      const flows: [string, string, string[]][] = [
        // A Redis Cluster's nodes replicate to each other, and the bootstrap Job forms them.
        [redis, 'redis', [...ROLES, 'archive', ...(isCluster ? [redis, BOOTSTRAP] : [])]],
        ['rabbitmq', 'amqp', [...ROLES]],
        ['jaeger', 'otlp-http', [...ROLES]],
      ]
      // Gossip, failure detection and failover votes.
      if (isCluster) flows.push([redis, 'bus', [redis]])
      for (const [name, portName, sources] of flows) {
        const { pod, port } = portOf(name, portName)
        assert.deepEqual(
          [...allowed(pod, port)].sort(),
          sources.sort(),
          `who reaches ${name}:${port}`,
        )
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
}

describe(`the Redis Cluster option (${OVERLAY}/)`, () => {
  const [nodes, ...others] = redisNodes(redisCluster)
  assert.ok(nodes && others.length === 0, `one Redis StatefulSet with ${OVERLAY}/`)
  const server = nodes.pod.containers[0]!
  const args = [...(server.command ?? []), ...(server.args ?? [])]
  const after = (flag: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined)
  const headless = serviceFor(redisCluster, nodes.serviceName ?? '')
  const addresses = podAddresses(nodes, 6379)
  const bootstrap = redisCluster.workloads.find((w) => w.kind === 'Job' && w.name === BOOTSTRAP)
  assert.ok(bootstrap, `no Job ${BOOTSTRAP}`)
  const job = bootstrap.pod.containers[0]!
  /** What the Job runs: the file its command names, from the ConfigMap mounted there. */
  const script = (() => {
    const path = (job.command ?? []).find((a) => a.endsWith('.sh')) ?? ''
    const mount = job.volumeMounts?.find((m) => path.startsWith(`${m.mountPath}/`))
    const volume = bootstrap.pod.volumes?.find((v) => v.name === mount?.name)
    const file = path.slice((mount?.mountPath.length ?? 0) + 1)
    const text = redisCluster.configMaps.get(volume?.configMap?.name ?? '')?.[file]
    assert.ok(text, `the bootstrap Job runs ${path}, which no mounted ConfigMap holds`)
    return text
  })()
  const replicasPerMaster = Number(/--cluster-replicas (\d+)/.exec(script)?.[1])
  const masters = nodes.replicas / (replicasPerMaster + 1)

  it('replaces k8s/redis.yaml with six cluster-enabled nodes, three masters with a replica each', () => {
    assert.ok(cluster.files.includes(REPLACED) && !redisCluster.files.includes(REPLACED))
    assert.ok(redisNodes(cluster).every((w) => !redisCluster.workloads.includes(w)))
    assert.equal(nodes.replicas, 6)
    assert.equal(after('--cluster-enabled'), 'yes')
    assert.equal(replicasPerMaster, 1, 'the bootstrap Job gives each master one replica')
    assert.equal(masters, 3)
    for (const { w, config } of redisClients(cluster))
      assert.deepEqual(config.REDIS_CLUSTER_NODES, [], `${w.name}: a cluster without the flag`)
  })

  it('keeps each node’s place in the cluster on its volume, and lets replicas authenticate', () => {
    const config = after('--cluster-config-file') ?? ''
    const mount = server.volumeMounts?.find((m) => config.startsWith(`${m.mountPath}/`))
    assert.ok(mount && nodes.claimTemplates.includes(mount.name), `${config} is not on the PVC`)
    const password = redisCluster.secrets.get('bakery-credentials')?.['redis-password']
    const env = environment(server, redisCluster)
    assert.equal(expand(after('--masterauth') ?? '', env), password, 'replicas could not sync')
  })

  it('gives every node a DNS name before it is ready, for clients and the cluster bus', () => {
    assert.equal(headless.spec?.clusterIP, 'None', `${headless.metadata?.name} is not headless`)
    assert.equal(headless.spec?.publishNotReadyAddresses, true)
    // Redis' bus is its client port + 10000 unless told otherwise.
    assert.ok(!args.includes('--port') && !args.includes('--cluster-port'))
    const ports = (headless.spec?.ports ?? []).map((p) => containerPort(server, p.targetPort ?? 0))
    assert.deepEqual(
      ports.sort((a, b) => (a ?? 0) - (b ?? 0)),
      [6379, 16379],
    )
    // Redirects name that DNS name, which outlives the pod's IP.
    assert.equal(after('--cluster-announce-hostname'), `$(POD_NAME).${headless.metadata?.name}`)
    const podName = server.env?.find((e) => e.name === 'POD_NAME')?.valueFrom?.fieldRef
    assert.equal(podName?.fieldPath, 'metadata.name')
    assert.equal(after('--cluster-preferred-endpoint-type'), 'hostname')
  })

  it('names the same six pods in REDIS_CLUSTER_NODES for every Redis client and the bootstrap Job', () => {
    const clients = redisClients(redisCluster)
    assert.ok(clients.length > ROLES.length)
    for (const { w, config } of clients) {
      const named = config.REDIS_CLUSTER_NODES.map(({ host, port }) => `${host}:${port}`)
      assert.deepEqual(named.sort(), addresses, `${w.name}: REDIS_CLUSTER_NODES`)
    }
    const list = environment(job, redisCluster).get('REDIS_CLUSTER_NODES') ?? ''
    assert.deepEqual(list.split(',').sort(), addresses, 'the nodes the bootstrap Job forms')
  })

  it('has partitions for every master, and accepts an order once a replica holds it', () => {
    for (const { w, config } of redisClients(redisCluster)) {
      const partitions = config.BAKERY_PARTITIONS
      assert.ok(partitions >= masters, `${w.name}: ${partitions} partitions for ${masters} masters`)
      const { replicas } = replicationOf(config)
      assert.ok(
        replicas >= 1 && replicas <= replicasPerMaster,
        `${w.name}: waits for ${replicas} replicas; each master has ${replicasPerMaster}`,
      )
    }
  })

  it('keeps all nodes but one through voluntary disruptions', () => {
    const budgets = redisCluster.budgets.filter((b) => matches(b.spec?.selector, nodes.podLabels))
    assert.equal(budgets.length, 1, 'one PodDisruptionBudget for the Redis Cluster')
    assert.equal(budgets[0]!.spec?.maxUnavailable, 1)
  })

  describe('its bootstrap Job', () => {
    // Stand-ins for the image's getent and redis-cli, driven by files in $FAKE: hosts (what each
    // name resolves to), known (how many nodes a node knows; known-<ip> for one), ok (its
    // cluster_state), linked (it is connected to every node; a create or a meet makes it so, and ok
    // too). calls records what redis-cli was asked.
    const fakes = {
      getent: ['grep " $2$" "$FAKE/hosts"'],
      'redis-cli': [
        'echo "$*" >> "$FAKE/calls"',
        'known=$(cat "$FAKE/known-$2" 2>/dev/null || cat "$FAKE/known")',
        'link=disconnected',
        'if [ -e "$FAKE/linked" ]; then known=$(($(wc -l < "$FAKE/hosts"))); link=connected; fi',
        'state=fail',
        'if [ -e "$FAKE/ok" ]; then state=ok; fi',
        'case "$*" in',
        '  *" ping") echo PONG ;;',
        '  *" cluster info")',
        '    printf "cluster_state:%s\\r\\ncluster_known_nodes:%s\\r\\n" "$state" "$known" ;;',
        '  *" cluster nodes")',
        '    echo "id0 myself,master connected"',
        '    i=1; while [ "$i" -lt "$known" ]; do echo "id$i master $link"; i=$((i + 1)); done ;;',
        '  "--cluster create "* | *" cluster meet "*) : > "$FAKE/ok"; : > "$FAKE/linked" ;;',
        'esac',
      ],
    }
    const ips = addresses.map((address, i) => ({ ip: `10.0.0.${i + 1}`, address }))

    function run(state: { known: number; ok?: boolean; linked?: boolean; lost?: number }) {
      const dir = mkdtempSync(join(tmpdir(), 'bootstrap-'))
      try {
        const hosts = ips.map(({ ip, address }) => `${ip} ${address.split(':')[0]}\n`)
        writeFileSync(join(dir, 'hosts'), hosts.join(''))
        writeFileSync(join(dir, 'known'), `${state.known}\n`)
        if (state.lost !== undefined) writeFileSync(join(dir, `known-${ips[state.lost]?.ip}`), '1')
        if (state.ok) writeFileSync(join(dir, 'ok'), '')
        if (state.linked) writeFileSync(join(dir, 'linked'), '')
        writeFileSync(join(dir, 'calls'), '')
        for (const [name, lines] of Object.entries(fakes)) {
          writeFileSync(join(dir, name), ['#!/bin/sh', ...lines, ''].join('\n'))
          chmodSync(join(dir, name), 0o755)
        }
        writeFileSync(join(dir, 'bootstrap.sh'), script)
        const result = spawnSync('sh', [join(dir, 'bootstrap.sh')], {
          encoding: 'utf8',
          // It waits for nodes that do not resolve: a name outside the StatefulSet never ends.
          timeout: 10_000,
          env: {
            PATH: `${dir}:${process.env.PATH ?? '/usr/bin:/bin'}`,
            FAKE: dir,
            REDIS_CLUSTER_NODES: environment(job, redisCluster).get('REDIS_CLUSTER_NODES'),
          },
        })
        const calls = readFileSync(join(dir, 'calls'), 'utf8').split('\n').filter(Boolean)
        return {
          status: result.status,
          output: `${result.stdout}${result.stderr}${result.error?.message ?? ''}`,
          creates: calls.filter((c) => c.startsWith('--cluster create ')),
          meets: calls.filter((c) => c.includes(' cluster meet ')),
          asked: calls.filter((c) => c.endsWith(' cluster info')).length,
        }
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }

    it('creates the cluster from nodes that know no other, by their IPs', () => {
      const { status, output, creates, meets } = run({ known: 1 })
      assert.equal(status, 0, output)
      const nodeIps = ips.map(({ ip }) => `${ip}:6379`).join(' ')
      assert.deepEqual(creates, [`--cluster create ${nodeIps} --cluster-replicas 1 --cluster-yes`])
      assert.deepEqual(meets, [])
    })

    it('leaves a cluster that is ok alone', () => {
      const { status, output, creates, meets, asked } = run({ known: 6, ok: true, linked: true })
      assert.equal(status, 0, output)
      assert.ok(asked >= addresses.length, 'it did not ask every node')
      assert.deepEqual([...creates, ...meets], [])
    })

    it('tells the nodes of a formed cluster where the others are, after all pods restarted', () => {
      // Each node knows the others by their old IPs: its state fails, or is ok for a while yet.
      for (const ok of [false, true]) {
        const { status, output, creates, meets } = run({ known: 6, ok })
        assert.equal(status, 0, output)
        assert.deepEqual(creates, [])
        const met = meets.map((c) => c.split(' cluster meet ')[1]?.replace(' ', ':'))
        assert.deepEqual(met.sort(), ips.map(({ ip }) => `${ip}:6379`).sort(), `ok: ${ok}`)
      }
    })

    it('refuses to touch a cluster with a node that lost its volume', () => {
      const { status, output, creates, meets } = run({ known: 6, lost: 2 })
      assert.ok(status !== null && status !== 0, output)
      assert.deepEqual([...creates, ...meets], [])
    })
  })
})

describe('the archive CronJob in k8s/', () => {
  const cron = cluster.cronJobs.find((c) => c.metadata?.name === 'archive')
  const w = cluster.workloads.find((x) => x.kind === 'CronJob' && x.name === 'archive')
  assert.ok(cron && w, 'no CronJob archive in k8s/')
  const c = w.pod.containers[0]!
  const args = c.args ?? []
  const after = (flag: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined)

  it('runs `bakery archive --before <age> --archive <dir>` every hour, one run at a time', () => {
    assert.equal(c.image, BAKERY_IMAGE)
    assert.equal(c.command, undefined, "command would bypass the image's entrypoint")
    assert.equal(args[0], 'archive')
    const before = after('--before') ?? ''
    const now = Date.now()
    const when = parseTime(before, now)
    assert.ok(when !== undefined && when < now, `--before ${before} is no time in the past`)
    assert.match(cron.spec?.schedule ?? '', /^\d+ \* \* \* \*$/, 'hourly')
    assert.equal(cron.spec?.concurrencyPolicy, 'Forbid', 'two runs would archive the same events')
  })

  it('writes to a PersistentVolumeClaim mounted, writable, where --archive points', () => {
    const dir = after('--archive')
    const mount = c.volumeMounts?.find((m) => m.mountPath === dir)
    assert.ok(mount, `--archive ${dir} is no mount`)
    assert.notEqual(mount.readOnly, true)
    const volume = w.pod.volumes?.find((v) => v.name === mount.name)
    const claim = cluster.claims.get(volume?.persistentVolumeClaim?.claimName ?? '')
    assert.ok(claim, `${dir} is not on a PersistentVolumeClaim`)
    assert.deepEqual(claim.spec?.accessModes, ['ReadWriteOnce'])
    assert.ok(quantity(claim.spec?.resources?.requests?.storage) >= 2 ** 30, 'under 1Gi')
    // A new volume belongs to root; fsGroup gives it to the unprivileged user's group.
    assert.ok(w.pod.securityContext?.fsGroup !== undefined, 'the volume is not writable')
    assert.equal(w.pod.securityContext?.fsGroup, w.pod.securityContext?.runAsGroup)
  })

  it('reads the roles’ settings, with one Redis and with the Redis Cluster', () => {
    for (const v of VARIANTS) {
      const archive = redisClients(v.cluster).find((x) => x.w.name === 'archive')
      assert.ok(archive, `${v.name}: the archive has no REDIS_URL`)
      assert.deepEqual(archive.c.envFrom, role(v.cluster, 'baker').c.envFrom)
    }
  })
})

describe('Tiltfile', () => {
  const source = tiltfile()
  const builds = calls(source, 'docker_build')
  const locals = calls(source, 'local_resource')
  /** The name the value of `--redis-cluster` is bound to. */
  const flag = /^(\w+)\s*=\s*cfg\.get\("redis-cluster",\s*False\)/m.exec(source)?.[1]
  /** The Tiltfile as `tilt up` runs it for a variant of VARIANTS. */
  function variantOf(v: (typeof VARIANTS)[number]): string {
    assert.ok(flag, 'nothing is bound to cfg.get("redis-cluster", False)')
    return tiltfileWith(source, { hardened: false, [flag]: v.redisCluster })
  }

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

  it('defines the --redis-cluster flag, which swaps k8s/redis.yaml for the overlay', () => {
    assert.ok(
      calls(source, 'config.define_bool').some((args) => firstString(args) === 'redis-cluster'),
      'no config.define_bool("redis-cluster")',
    )
    const [one, clustered] = VARIANTS.map(variantOf)
    assert.notEqual(one, clustered, 'the flag changes nothing')
  })

  it('loads every file in k8s/, or the overlay’s in place of k8s/redis.yaml, and names only files that exist', () => {
    const manifests: string[] = []
    for (const v of VARIANTS) {
      const variant = variantOf(v)
      const call = /^objects\s*=\s*load_manifests\(([^,]*),([^)]*)\)\s*$/m.exec(variant)
      assert.ok(call, 'no `objects = load_manifests(<manifests>, <patches>)`')
      assert.match(
        variant,
        /k8s_yaml\(encode_yaml_stream\(objects\b/,
        'the objects are not applied',
      )
      const bound = bindings(variant)
      const files = evaluate(call[1]!, bound)
      const patches = evaluate(call[2]!, bound)
      assert.deepEqual(
        [...files].sort(),
        [...v.cluster.files],
        `${v.name}: the Tiltfile loads others`,
      )
      assert.deepEqual([...patches].sort(), [...v.cluster.patches], `${v.name}: patches`)
      manifests.push(...files, ...patches)
    }
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

  for (const v of VARIANTS) {
    it(`configures resources that exist in ${v.name}, with labels, dependencies and port-forwards`, () => {
      const variant = variantOf(v)
      const bound = bindings(variant)
      const resources = calls(variant, 'k8s_resource')
      const { cluster } = v
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
        for (const dep of evaluate(kwarg(r, 'resource_deps') ?? '', bound)) {
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
        if (['Deployment', 'StatefulSet', 'Job', 'CronJob', 'Service'].includes(o.kind)) continue
        assert.ok(
          claimed.includes(`${o.name}:${o.kind.toLowerCase()}`),
          `${o.kind} ${o.name} is in no resource`,
        )
      }
      for (const selector of claimed) {
        assert.ok(
          cluster.objects.some((o) => `${o.name}:${o.kind.toLowerCase()}` === selector),
          `objects names ${selector}, which ${v.name} does not define`,
        )
      }
    })
  }

  it('starts the roles and the archive once Redis takes writes, forwards the UIs, and leaves the load test to a click', () => {
    const resourceIn = (variant: string, name: string) => {
      const r = calls(variant, 'k8s_resource').find((x) => firstString(x) === name)
      assert.ok(r, `no k8s_resource("${name}")`)
      return r
    }
    for (const v of VARIANTS) {
      const variant = variantOf(v)
      const deps = (name: string) =>
        evaluate(kwarg(resourceIn(variant, name), 'resource_deps') ?? '', bindings(variant))
      // One Redis takes writes once it is ready; a Redis Cluster once the bootstrap Job formed it.
      const store = v.redisCluster ? BOOTSTRAP : 'redis'
      if (v.redisCluster) assert.ok(deps(BOOTSTRAP).includes(redisNodes(v.cluster)[0]?.name ?? ''))
      for (const name of [...ROLES, 'archive']) {
        assert.ok(deps(name).includes(store), `${v.name}: ${name} does not wait for ${store}`)
        if (name !== 'archive')
          assert.ok(deps(name).includes('rabbitmq'), `${name} does not wait for RabbitMQ`)
      }
    }
    const resource = (name: string) => resourceIn(variantOf(VARIANTS[0]), name)
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

  it('runs the Jobs and the CronJob’s Jobs, in development, with the dev entrypoint minus --watch', () => {
    // for_live_update finds the pods of every kind of workload that runs the Bakery image.
    const podTemplate = /^def pod_template\(o\):([\s\S]*?)\n(?=\S)/m.exec(source)?.[1] ?? ''
    assert.match(source, /^def for_live_update[\s\S]*?pod_template\(o\)/m)
    const kinds = new Set(
      VARIANTS.flatMap((v) => bakeryContainers(v.cluster).map(({ w }) => w.kind)),
    )
    assert.ok(kinds.has('CronJob'))
    for (const kind of kinds)
      assert.ok(strings(podTemplate).includes(kind), `for_live_update leaves ${kind}s as they are`)
    assert.match(podTemplate, /\["spec"\]\["jobTemplate"\]\["spec"\]\["template"\]/)

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
