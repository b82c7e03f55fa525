/**
 * A JSON Schema (2020-12) checker for the subset Bakery's OpenAPI document uses. A keyword it does
 * not know is an error, so the document cannot use one that goes unchecked.
 */
type Schema = Record<string, unknown>

const KNOWN = new Set([
  '$ref',
  'type',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'enum',
  'const',
  'anyOf',
  'minLength',
  'maxLength',
  'pattern',
  'minimum',
  'format',
  'description',
])

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

function typeMatches(type: string, value: unknown): boolean {
  switch (type) {
    case 'object':
      return isObject(value)
    case 'array':
      return Array.isArray(value)
    case 'string':
      return typeof value === 'string'
    case 'number':
      return typeof value === 'number' && Number.isFinite(value)
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value)
    case 'boolean':
      return typeof value === 'boolean'
    case 'null':
      return value === null
    default:
      throw new Error(`unknown type ${type}`)
  }
}

/** Every way `value` fails `schema`, as `<JSON Pointer>: <reason>`; empty when it conforms. */
export function check(
  schema: unknown,
  value: unknown,
  root: Record<string, unknown>,
  path = '',
): string[] {
  if (!isObject(schema)) throw new Error(`${path}: a schema must be an object`)
  for (const keyword of Object.keys(schema))
    if (!KNOWN.has(keyword)) throw new Error(`${path}: unsupported keyword ${keyword}`)
  const s: Schema = schema
  if (typeof s.$ref === 'string') return check(resolve(root, s.$ref), value, root, path)
  const errors: string[] = []
  const fail = (reason: string) => errors.push(`${path || '/'}: ${reason}`)
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string]
    if (!types.some((type) => typeMatches(type, value))) {
      fail(`is not ${types.join(' or ')}: ${JSON.stringify(value)}`)
      return errors
    }
  }
  if ('const' in s && JSON.stringify(s.const) !== JSON.stringify(value))
    fail(`is not ${JSON.stringify(s.const)}`)
  if (Array.isArray(s.enum) && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(value)))
    fail(`is not one of ${JSON.stringify(s.enum)}`)
  if (Array.isArray(s.anyOf)) {
    const branches = s.anyOf.map((branch) => check(branch, value, root, path))
    if (!branches.some((branchErrors) => branchErrors.length === 0))
      fail(`matches none of anyOf (${branches.map((b) => b.join(', ')).join(' | ')})`)
  }
  if (typeof value === 'string') {
    const length = [...value].length
    if (typeof s.minLength === 'number' && length < s.minLength) fail('is too short')
    if (typeof s.maxLength === 'number' && length > s.maxLength) fail('is too long')
    if (typeof s.pattern === 'string' && !new RegExp(s.pattern, 'u').test(value))
      fail(`does not match ${s.pattern}`)
    if (s.format === 'date-time' && Number.isNaN(Date.parse(value))) fail('is not a date-time')
  }
  if (typeof value === 'number' && typeof s.minimum === 'number' && value < s.minimum)
    fail(`is below ${s.minimum}`)
  if (Array.isArray(value) && s.items !== undefined)
    value.forEach((item, i) => errors.push(...check(s.items, item, root, `${path}/${i}`)))
  if (isObject(value)) {
    const properties = isObject(s.properties) ? s.properties : {}
    for (const name of Array.isArray(s.required) ? (s.required as string[]) : [])
      if (!(name in value)) fail(`lacks required property ${name}`)
    for (const [name, item] of Object.entries(value)) {
      if (name in properties) errors.push(...check(properties[name], item, root, `${path}/${name}`))
      else if (s.additionalProperties === false) fail(`has a property not in the schema: ${name}`)
    }
  }
  return errors
}

/** Follows a local `$ref` (`#/a/b`). */
export function resolve(root: Record<string, unknown>, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`only local $refs are supported: ${ref}`)
  let node: unknown = root
  for (const raw of ref.slice(2).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    if (!isObject(node) || !(part in node)) throw new Error(`$ref ${ref} does not resolve`)
    node = node[part]
  }
  return node
}

/** Walks a schema: every keyword known, every $ref resolving, every subschema an object. */
export function assertSchema(schema: unknown, root: Record<string, unknown>, path = ''): void {
  if (!isObject(schema)) throw new Error(`${path}: a schema must be an object`)
  for (const keyword of Object.keys(schema))
    if (!KNOWN.has(keyword)) throw new Error(`${path}: unsupported keyword ${keyword}`)
  if (typeof schema.$ref === 'string') resolve(root, schema.$ref)
  if (isObject(schema.properties))
    for (const [name, sub] of Object.entries(schema.properties))
      assertSchema(sub, root, `${path}/properties/${name}`)
  if (schema.items !== undefined) assertSchema(schema.items, root, `${path}/items`)
  if (Array.isArray(schema.anyOf))
    schema.anyOf.forEach((sub, i) => assertSchema(sub, root, `${path}/anyOf/${i}`))
  if (Array.isArray(schema.required))
    for (const name of schema.required as unknown[])
      if (!isObject(schema.properties) || typeof name !== 'string' || !(name in schema.properties))
        throw new Error(`${path}: required ${String(name)} is not among the properties`)
}
