/**
 * The storefront's script, run by the browser (compiled on its own: see tsconfig.json here). It
 * places orders with POST /orders (with an Idempotency-Key, so a retried click never orders twice)
 * and follows each with GET /orders/:key/updates. At most MAX_STREAMS streams are open at once: a
 * browser allows six connections per host, and the form must keep one. The board is kept in
 * localStorage, so a reload shows it again.
 */
;(() => {
  const STORAGE = 'bakery.orders'
  const MAX_ORDERS = 12
  const MAX_STREAMS = 4
  const STATUSES = ['pending', 'baking', 'finished'] as const
  type Status = (typeof STATUSES)[number]

  /** An order on the board, as localStorage keeps it. */
  interface Order {
    readonly orderKey: string
    readonly customer: string
    readonly pastry: string
    status: Status
    traceId: string | null
  }

  interface OrderForm extends HTMLFormElement {
    readonly customer: HTMLInputElement
    readonly pastry: HTMLInputElement
  }

  const byId = <E extends HTMLElement>(id: string): E => {
    const element = document.getElementById(id)
    if (!element) throw new Error(`the page has no #${id}`)
    return element as E
  }

  const isStatus = (value: unknown): value is Status =>
    typeof value === 'string' && (STATUSES as readonly string[]).includes(value)

  const jaeger = document.body.dataset.jaegerUi ?? ''
  const form = byId<OrderForm>('order-form')
  const button = byId<HTMLButtonElement>('order-button')
  const message = byId('form-message')
  const board = byId('board')
  const empty = byId('board-empty')
  const announcer = byId('announcer')
  const streams = new Map<string, EventSource>()
  const waiting: Order[] = []
  let orders = load()
  let attempt: { body: string; key: string } | null = null

  function load(): Order[] {
    try {
      const stored: unknown = JSON.parse(localStorage.getItem(STORAGE) ?? '[]')
      return Array.isArray(stored)
        ? stored.filter(
            (item: Partial<Order> | null): item is Order =>
              !!item && /^[0-9a-f]{32}$/.test(String(item.orderKey)) && isStatus(item.status),
          )
        : []
    } catch {
      return []
    }
  }

  function save(): void {
    try {
      localStorage.setItem(STORAGE, JSON.stringify(orders))
    } catch {
      // Private mode or full: the board simply does not survive a reload.
    }
  }

  function randomKey(): string {
    const bytes = new Uint8Array(16)
    crypto.getRandomValues(bytes)
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
  }

  function traceIdOf(header: string | null): string | null {
    const match = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(header ?? '')
    return match?.[1] && !/^0+$/.test(match[1]) ? match[1] : null
  }

  function say(text: string, isError = false): void {
    message.textContent = text
    message.classList.toggle('error', isError)
  }

  function render(): void {
    empty.hidden = orders.length > 0
    const items = orders.map((order) => {
      const item =
        board.querySelector<HTMLLIElement>(`[data-order-key="${order.orderKey}"]`) ??
        createItem(order)
      updateItem(item, order)
      return item
    })
    board.replaceChildren(...items)
  }

  function createItem(order: Order): HTMLLIElement {
    const item = document.createElement('li')
    item.className = 'order'
    item.dataset.orderKey = order.orderKey
    const title = document.createElement('span')
    title.className = 'order-title'
    title.textContent = `${order.pastry} for ${order.customer}`
    const steps = document.createElement('ol')
    steps.className = 'steps'
    steps.setAttribute('aria-hidden', 'true')
    for (const status of STATUSES) {
      const step = document.createElement('li')
      step.dataset.step = status
      steps.append(step)
    }
    const meta = document.createElement('span')
    meta.className = 'order-meta'
    const status = document.createElement('span')
    status.className = 'status'
    const key = document.createElement('code')
    key.textContent = order.orderKey.slice(0, 8)
    key.title = order.orderKey
    const trace = document.createElement('a')
    trace.className = 'trace'
    trace.textContent = 'trace'
    meta.append(status, key, trace)
    item.append(title, steps, meta)
    return item
  }

  function updateItem(item: HTMLLIElement, order: Order): void {
    item.dataset.status = order.status
    const status = item.querySelector<HTMLElement>('.status')!
    status.dataset.status = order.status
    status.textContent = order.status
    const reached = STATUSES.indexOf(order.status)
    item
      .querySelectorAll('.steps li')
      .forEach((step, i) => step.classList.toggle('done', i <= reached))
    const trace = item.querySelector<HTMLAnchorElement>('.trace')!
    if (order.traceId) {
      trace.href = `${jaeger}/trace/${order.traceId}`
      trace.textContent = 'trace in Jaeger'
      trace.setAttribute('aria-label', `trace of ${order.pastry} for ${order.customer} in Jaeger`)
      trace.hidden = false
    } else {
      trace.removeAttribute('href')
      trace.hidden = true
    }
  }

  function setStatus(order: Order, status: Status): void {
    if (order.status === status) return
    order.status = status
    save()
    render()
    announcer.textContent = `${order.pastry} for ${order.customer} is ${status}`
  }

  function follow(order: Order): void {
    if (order.status === 'finished' || streams.has(order.orderKey)) return
    if (streams.size >= MAX_STREAMS) {
      if (!waiting.includes(order)) waiting.push(order)
      return
    }
    const source = new EventSource(`/orders/${order.orderKey}/updates`)
    streams.set(order.orderKey, source)
    const done = () => {
      source.close()
      streams.delete(order.orderKey)
      const next = waiting.shift()
      if (next) follow(next)
    }
    source.onmessage = (event: MessageEvent<string>) => {
      let view: { status?: unknown }
      try {
        view = JSON.parse(event.data) as { status?: unknown }
      } catch {
        return
      }
      if (isStatus(view.status)) setStatus(order, view.status)
      if (view.status === 'finished') done()
    }
    // While the stream is only interrupted the browser reconnects by itself (with Last-Event-ID);
    // CLOSED means it gave up, e.g. on a 404 for an order this reception does not know.
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) done()
    }
  }

  async function findTraceId(order: Order): Promise<void> {
    try {
      const response = await fetch(`/orders/${order.orderKey}/events`, {
        headers: { accept: 'application/json' },
      })
      if (!response.ok) return
      const history = (await response.json()) as { entries?: { traceId?: unknown }[] }
      const first = history.entries?.[0]
      if (typeof first?.traceId === 'string') {
        order.traceId = first.traceId
        save()
        render()
      }
    } catch {
      // No trace link, then.
    }
  }

  async function placeOrder(): Promise<void> {
    if (!form.reportValidity()) return
    const sent = { customer: form.customer.value, pastry: form.pastry.value }
    const body = JSON.stringify(sent)
    // A retry of the same order (say, after a network error) reuses its Idempotency-Key.
    if (attempt?.body !== body) attempt = { body, key: randomKey() }
    button.disabled = true
    say('Placing your order…')
    try {
      const response = await fetch('/orders', {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          'idempotency-key': attempt.key,
        },
        body,
      })
      const answer = (await response.json()) as { orderKey?: string; detail?: string }
      if (response.status !== 202 || !answer.orderKey) {
        say(answer.detail ?? `The order was not accepted (${response.status}).`, true)
        if (response.status < 500) attempt = null
        return
      }
      attempt = null
      const orderKey = answer.orderKey
      let order = orders.find((known) => known.orderKey === orderKey)
      if (!order) {
        order = {
          orderKey,
          customer: sent.customer.trim(),
          pastry: sent.pastry.trim(),
          status: 'pending',
          traceId: traceIdOf(response.headers.get('traceresponse')),
        }
        orders = [order, ...orders].slice(0, MAX_ORDERS)
        save()
        render()
      }
      say(`Ordered ${order.pastry} for ${order.customer}.`)
      form.pastry.value = ''
      form.pastry.focus()
      if (!order.traceId) void findTraceId(order)
      follow(order)
    } catch {
      say('The reception cannot be reached; try again.', true)
    } finally {
      button.disabled = false
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault()
    void placeOrder()
  })

  render()
  orders.forEach(follow)
})()
