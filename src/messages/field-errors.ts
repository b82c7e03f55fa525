import type * as t from 'io-ts'

/** One field a codec refused, for people: a 400 problem body, a dead-letter reason. */
export interface FieldError {
  /** Where in the message, as a JSON Pointer (RFC 6901), e.g. `/customer`. */
  readonly path: string
  readonly message: string
}

/**
 * io-ts reports each failure with the whole chain of codecs that led to it, the message's own
 * codec first (its key is empty). The keys that are not empty are the field's path; one entry a
 * path, the first reason given for it.
 */
export function fieldErrors(errors: t.Errors): FieldError[] {
  const seen = new Map<string, FieldError>()
  for (const error of errors) {
    const keys = error.context.map((entry) => entry.key).filter((key) => key !== '')
    const path = '/' + keys.map((key) => key.replace(/~/g, '~0').replace(/\//g, '~1')).join('/')
    const expected = error.context[error.context.length - 1]?.type.name ?? 'a valid value'
    const message =
      error.value === undefined ? 'is required' : (error.message ?? `must be ${expected}`)
    if (!seen.has(path)) seen.set(path, { path, message })
  }
  return [...seen.values()]
}

/** The same, in one line: `/customer: must be a string; /orderTime: is required`. */
export const describeFieldErrors = (errors: t.Errors): string =>
  fieldErrors(errors)
    .map(({ path, message }) => `${path}: ${message}`)
    .join('; ')
