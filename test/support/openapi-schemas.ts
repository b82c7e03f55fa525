import { Ajv2020, type ErrorObject } from 'ajv/dist/2020'
import { default as addFormats } from 'ajv-formats'

/**
 * The schemas of an OpenAPI 3.1 document, compiled by Ajv (JSON Schema 2020-12, OpenAPI 3.1's
 * dialect). Strict: a keyword Ajv does not know, or a `$ref` that does not resolve, fails the
 * compile, so the document cannot hold a schema that goes unchecked.
 */
export class OpenApiSchemas {
  private readonly ajv = new Ajv2020({ strict: true, allErrors: true })
  private static readonly id = 'bakery:openapi'

  constructor(doc: Record<string, unknown>) {
    addFormats(this.ajv)
    // The document's own fields are not schema keywords; only what they hold is compiled.
    for (const field of Object.keys(doc)) this.ajv.addKeyword(field)
    this.ajv.addSchema({ ...doc, $id: OpenApiSchemas.id })
  }

  /** Compiles the schema at `pointer` (`#/components/schemas/OrderView`); throws if it is wrong. */
  compile(pointer: string) {
    return this.ajv.compile({ $ref: `${OpenApiSchemas.id}${pointer}` })
  }

  /** Every way `value` fails the schema at `pointer`, as `<JSON Pointer> <reason>`; empty if none. */
  check(pointer: string, value: unknown): string[] {
    const validate = this.compile(pointer)
    if (validate(value)) return []
    return (validate.errors ?? []).map(describe)
  }
}

/** A JSON Pointer into the document: `['paths', '/orders']` -> `#/paths/~1orders`. */
export function pointer(...parts: readonly string[]): string {
  return `#/${parts.map((part) => part.replace(/~/g, '~0').replace(/\//g, '~1')).join('/')}`
}

const describe = (error: ErrorObject) =>
  `${error.instancePath || '/'} ${error.message ?? error.keyword} ${JSON.stringify(error.params)}`
