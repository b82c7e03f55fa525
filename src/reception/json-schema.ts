import * as t from 'io-ts'
import { Name, NAME_MAX_LENGTH, NonNegativeInt, OrderKey, Timestamp } from '../messages'

/** A JSON value, as a JSON Schema or an OpenAPI document is made of. */
export type Json =
  | string
  | number
  | boolean
  | null
  | readonly Json[]
  | { readonly [key: string]: Json }
export type JsonSchema = { readonly [key: string]: Json }

/**
 * Codecs that are not built from io-ts combinators (or whose refinement JSON Schema can say):
 * their schema is written out here, next to nothing else, so it is easy to hold against the codec.
 */
const leaves = new Map<t.Mixed, JsonSchema>([
  [
    Name,
    {
      type: 'string',
      minLength: 1,
      maxLength: NAME_MAX_LENGTH,
      pattern: '\\S',
      description:
        'Trimmed on input; no control characters, no bidirectional overrides or isolates (U+202A-U+202E, U+2066-U+2069).',
    },
  ],
  [OrderKey, { type: 'string', pattern: '^[0-9a-f]{32}$', description: '128 random bits in hex.' }],
  [Timestamp, { type: 'string', format: 'date-time', description: 'RFC 3339, UTC.' }],
  [NonNegativeInt, { type: 'integer', minimum: 0 }],
])

export interface SchemaOptions {
  /**
   * Whether `t.exact` objects forbid other properties. True for what Bakery writes (responses);
   * false for what it reads, where unknown properties are dropped, not refused.
   */
  readonly closed: boolean
}

/**
 * The JSON Schema (2020-12, as OpenAPI 3.1 uses) of an io-ts codec. Only the combinators Bakery
 * uses are known; any other throws, so that a new kind of codec cannot slip past the contract.
 */
export function toJsonSchema(codec: t.Mixed, options: SchemaOptions): JsonSchema {
  const leaf = leaves.get(codec)
  if (leaf) return leaf
  if (codec instanceof t.StringType) return { type: 'string' }
  if (codec instanceof t.NumberType) return { type: 'number' }
  if (codec instanceof t.BooleanType) return { type: 'boolean' }
  if (codec instanceof t.NullType) return { type: 'null' }
  if (codec instanceof t.LiteralType) return { const: codec.value as string | number | boolean }
  if (codec instanceof t.KeyofType)
    return { type: 'string', enum: Object.keys(codec.keys as Record<string, unknown>) }
  if (codec instanceof t.ArrayType || codec instanceof t.ReadonlyArrayType)
    return { type: 'array', items: toJsonSchema(codec.type as t.Mixed, options) }
  if (codec instanceof t.UnionType)
    return { anyOf: (codec.types as t.Mixed[]).map((member) => toJsonSchema(member, options)) }
  if (codec instanceof t.ExactType) {
    const inner = toJsonSchema(codec.type as t.Mixed, options)
    return options.closed ? { ...inner, additionalProperties: false } : inner
  }
  if (codec instanceof t.InterfaceType) return objectSchema(codec.props as t.Props, true, options)
  if (codec instanceof t.PartialType) return objectSchema(codec.props as t.Props, false, options)
  if (codec instanceof t.IntersectionType)
    return merge((codec.types as t.Mixed[]).map((member) => toJsonSchema(member, options)))
  throw new Error(`no JSON Schema for the codec ${codec.name}; add it to json-schema.ts`)
}

function objectSchema(props: t.Props, required: boolean, options: SchemaOptions): JsonSchema {
  const properties: Record<string, Json> = {}
  for (const [name, codec] of Object.entries(props)) properties[name] = toJsonSchema(codec, options)
  return {
    type: 'object',
    properties,
    ...(required ? { required: Object.keys(props) } : {}),
  }
}

/** An intersection of object schemas, as one object schema (simpler to read than `allOf`). */
function merge(parts: readonly JsonSchema[]): JsonSchema {
  const properties: Record<string, Json> = {}
  const required: Json[] = []
  for (const part of parts) {
    if (part.type !== 'object') throw new Error('only intersections of objects are supported')
    Object.assign(properties, part.properties)
    if (Array.isArray(part.required)) required.push(...(part.required as Json[]))
  }
  return { type: 'object', properties, required }
}
