import { ROOT_CONTEXT, type Context, type ContextManager } from '@opentelemetry/api'

/**
 * Enough of a context manager for synchronous code (a log call, the append script's caller) to
 * see the caller's span, without an SDK.
 */
export class StackContextManager implements ContextManager {
  private current: Context = ROOT_CONTEXT
  active(): Context {
    return this.current
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const previous = this.current
    this.current = ctx
    try {
      return fn.call(thisArg, ...args)
    } finally {
      this.current = previous
    }
  }
  bind<T>(_ctx: Context, target: T): T {
    return target
  }
  enable(): this {
    return this
  }
  disable(): this {
    return this
  }
}
