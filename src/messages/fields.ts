import * as t from 'io-ts'

/** Limits on what a customer may write; documented in the README's API section. */
export const NAME_MAX_LENGTH = 100

interface OrderKeyBrand {
  readonly OrderKey: unique symbol
}
/** 128 random bits as 32 lowercase hex digits. */
export const OrderKey = t.brand(
  t.string,
  (s): s is t.Branded<string, OrderKeyBrand> => /^[0-9a-f]{32}$/.test(s),
  'OrderKey',
)
export type OrderKey = t.TypeOf<typeof OrderKey>

interface TimestampBrand {
  readonly Timestamp: unique symbol
}
/** An RFC 3339 instant in UTC, as `Date.prototype.toISOString` writes it. */
export const Timestamp = t.brand(
  t.string,
  (s): s is t.Branded<string, TimestampBrand> =>
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/.test(s) && !Number.isNaN(Date.parse(s)),
  'Timestamp',
)
export type Timestamp = t.TypeOf<typeof Timestamp>

export const timestamp = (date: Date): Timestamp => date.toISOString() as Timestamp

// eslint-disable-next-line no-control-regex -- rejecting control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/

// Embeddings, overrides and isolates reorder how text is shown (a "Trojan Source" name reads
// differently from what it is); right-to-left letters themselves are fine.
const BIDI_CONTROL = /[\u202a-\u202e\u2066-\u2069]/

/**
 * A person-written name (customer, pastry): trimmed, 1 to NAME_MAX_LENGTH characters, no control
 * characters and no bidirectional overrides or isolates. Decoding trims, so `" homer "` is stored
 * as `"homer"`.
 */
export const Name = new t.Type<string, string, unknown>(
  'Name',
  (u): u is string =>
    typeof u === 'string' &&
    u === u.trim() &&
    u.length > 0 &&
    [...u].length <= NAME_MAX_LENGTH &&
    !CONTROL.test(u) &&
    !BIDI_CONTROL.test(u),
  (u, c) => {
    if (typeof u !== 'string') return t.failure(u, c, 'must be a string')
    const s = u.trim()
    if (s.length === 0) return t.failure(u, c, 'must not be empty or blank')
    if ([...s].length > NAME_MAX_LENGTH)
      return t.failure(u, c, `must be at most ${NAME_MAX_LENGTH} characters`)
    if (CONTROL.test(s)) return t.failure(u, c, 'must not contain control characters')
    if (BIDI_CONTROL.test(s))
      return t.failure(
        u,
        c,
        'must not contain bidirectional override or isolate characters (U+202A-U+202E, U+2066-U+2069)',
      )
    return t.success(s)
  },
  t.identity,
)

export const NonNegativeInt = t.brand(
  t.number,
  (n): n is t.Branded<number, { readonly NonNegativeInt: unique symbol }> =>
    Number.isSafeInteger(n) && n >= 0,
  'NonNegativeInt',
)
