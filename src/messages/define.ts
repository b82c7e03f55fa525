import * as t from 'io-ts'

/**
 * One io-ts codec per message is the single source of truth. `defineMessage` adds the two fields
 * every @node-ts/bus message carries (`$name`, `$version`) and the argument-less class that
 * bus-core's handler registry instantiates to learn a message's name.
 */
export type MessageKind = 'command' | 'event'

export interface MessageDefinition<N extends string, V extends number, P extends t.Props> {
  readonly kind: MessageKind
  readonly $name: N
  readonly $version: V
  /** Decodes a whole message and drops properties the contract does not name. */
  readonly codec: t.ExactC<t.TypeC<P & { $name: t.LiteralC<N>; $version: t.LiteralC<V> }>>
  readonly Class: new () => { readonly $name: N; readonly $version: V }
  create(payload: t.TypeOf<t.TypeC<P>>): MessageOf<MessageDefinition<N, V, P>>
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- variance-free bound for "any definition"
export type AnyMessageDefinition = MessageDefinition<string, number, any>

export type MessageOf<D> =
  D extends MessageDefinition<infer N, infer V, infer P>
    ? t.TypeOf<t.TypeC<P>> & { readonly $name: N; readonly $version: V }
    : never

export function defineMessage<N extends string, V extends number, P extends t.Props>(
  kind: MessageKind,
  $name: N,
  $version: V,
  props: P,
): MessageDefinition<N, V, P> {
  const codec = t.exact(
    t.type({ ...props, $name: t.literal($name), $version: t.literal($version) }, $name),
  )
  class Message {
    readonly $name = $name
    readonly $version = $version
  }
  Object.defineProperty(Message, 'name', { value: $name })
  return {
    kind,
    $name,
    $version,
    codec,
    Class: Message,
    create: (payload) => ({ ...payload, $name, $version }),
  }
}

/** Ends an exhaustive `switch`: a new message type is a compile error until it is handled. */
export function assertNever(value: never): never {
  throw new Error(`unhandled case: ${JSON.stringify(value)}`)
}
