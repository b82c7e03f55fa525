import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import {
  createVhost,
  dropNamespace,
  freePort,
  REDIS_URL,
  startPipeline,
  uniqueNamespace,
  waitFor,
  type RoleProcess,
} from './support'

const CHROMIUM = '/usr/bin/chromium'
const JAEGER_UI = 'http://jaeger.test:16686'
export const SCREENSHOT = '/tmp/bakery-storefront.png'

/** WCAG 2 contrast ratio of two `rgb(...)` colours. */
function contrast(a: string, b: string): number {
  const luminance = (colour: string) => {
    const [r = 0, g = 0, bl = 0] = (colour.match(/[\d.]+/g) ?? []).map(Number).map((c) => {
      const s = c / 255
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4
    })
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl
  }
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x)
  return (hi! + 0.05) / (lo! + 0.05)
}

/** The storefront in headless Chromium, against the three roles as real processes. */
describe('the storefront page', () => {
  const namespace = uniqueNamespace('storefront')
  const roles: RoleProcess[] = []
  let vhost: Awaited<ReturnType<typeof createVhost>>
  let base = ''
  let profile = ''
  let browser: BrowserContext
  let page: Page
  const requests: string[] = []
  const problems: string[] = []

  before(async () => {
    vhost = await createVhost('storefront')
    const env = {
      AMQP_URL: vhost.url,
      REDIS_URL,
      BAKERY_NAMESPACE: namespace,
      PORT: '0',
      HEALTH_PORT: '0',
      // Slow enough to be seen baking, quick enough for a test: at most 0.5 s in the oven.
      BAKE_TIME_SCALE: '5',
      JAEGER_UI_URL: JAEGER_UI,
      // Traced, so that POST /orders answers a traceresponse; nobody collects the spans.
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await freePort()}`,
      OTEL_TRACES_EXPORTER: 'otlp',
    }
    base = await startPipeline(env, roles)
    profile = await mkdtemp(join(tmpdir(), 'bakery-chromium-'))
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
      viewport: { width: 1100, height: 760 },
    })
    page = browser.pages()[0] ?? (await browser.newPage())
    page.on('request', (request) => requests.push(request.url()))
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()}`)
    })
  })

  after(async () => {
    await browser?.close()
    if (profile) await rm(profile, { recursive: true, force: true })
    await Promise.all(roles.map((role) => role.stop()))
    await dropNamespace(namespace)
    await vhost.drop()
  })

  it('places orders from the keyboard and by clicking, and shows them reach finished live', async () => {
    const response = await page.goto(`${base}/`)
    assert.equal(response?.status(), 200)
    assert.match(String(response?.headers()['content-type']), /^text\/html/)
    assert.equal(await page.title(), 'Bakery')
    // In-page code is passed as text: this project's TypeScript has no DOM types.
    await page.evaluate('window.notReloaded = true')

    // Keyboard only: the labels name the fields, Tab moves between them, Enter orders.
    await page.getByLabel('Your name').focus()
    await page.keyboard.type('homer')
    await page.keyboard.press('Tab')
    assert.equal(await page.evaluate<string>('document.activeElement.id'), 'pastry')
    await page.keyboard.type('la bombe')
    await page.keyboard.press('Enter')
    const items = page.locator('#board > li')
    // The form is filled again once the first order is in: wait, or the next fill races it.
    await waitFor('the first order on the board', async () => (await items.count()) === 1)
    // And with the mouse.
    await page.getByLabel('Your name').fill('marge')
    await page.getByLabel('Pastry').fill('croissant')
    await page.getByRole('button', { name: 'Order' }).click()

    await waitFor('both orders on the board', async () => (await items.count()) === 2)
    await waitFor(
      'both orders finished, without reloading',
      async () =>
        (await page.locator('#board > li[data-status="finished"]').count()) === 2 &&
        (await page.evaluate<boolean>('window.notReloaded === true')),
      { timeoutMs: 20_000 },
    )
    assert.deepEqual(await page.locator('#board .order-title').allTextContents(), [
      'croissant for marge',
      'la bombe for homer',
    ])
    assert.deepEqual(await page.locator('#board .status').allTextContents(), [
      'finished',
      'finished',
    ])
    assert.match(String(await page.locator('#form-message').textContent()), /Ordered croissant/)

    // Each links to its trace in Jaeger: the trace of the order's first event.
    for (const item of await items.all()) {
      const key = String(await item.getAttribute('data-order-key'))
      const history = (await (await fetch(`${base}/orders/${key}/events`)).json()) as {
        entries: { traceId: string | null }[]
      }
      const traceId = history.entries[0]?.traceId
      assert.match(String(traceId), /^[0-9a-f]{32}$/)
      assert.equal(
        await item.locator('a.trace').getAttribute('href'),
        `${JAEGER_UI}/trace/${traceId}`,
      )
    }

    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    const foreign = requests.filter(
      (url) => !url.startsWith(`${base}/`) && !url.startsWith('data:'),
    )
    assert.deepEqual(foreign, [], 'the page asks nothing of any other host')
    assert.deepEqual(problems, [], 'no errors in the page')
  })

  it('has readable contrast and keeps its board across a reload', async () => {
    const selectors = [
      'body',
      'label',
      'button',
      '#board .status',
      '#board .order-title',
      'footer p',
    ]
    // For each selector: its text colour and the first opaque background behind it.
    const pairs = await page.evaluate<[string, string, string][]>(`
      ${JSON.stringify(selectors)}.map((selector) => {
        const element = document.querySelector(selector)
        const colour = getComputedStyle(element).color
        let background = 'rgba(0, 0, 0, 0)'
        for (let e = element; e && /rgba\\(0, 0, 0, 0\\)/.test(background); e = e.parentElement)
          background = getComputedStyle(e).backgroundColor
        return [selector, colour, background]
      })
    `)
    assert.equal(pairs.length, selectors.length)
    for (const [selector, colour, background] of pairs) {
      const ratio = contrast(
        colour,
        /rgba\(0, 0, 0, 0\)/.test(background) ? 'rgb(255, 255, 255)' : background,
      )
      assert.ok(ratio >= 4.5, `${selector}: ${colour} on ${background} is ${ratio.toFixed(2)}:1`)
    }

    await page.reload()
    await waitFor(
      'the board to come back',
      async () => (await page.locator('#board > li').count()) === 2,
    )
  })
})
