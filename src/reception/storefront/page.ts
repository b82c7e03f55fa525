/**
 * The storefront: one page, its stylesheet and its script, served by the reception itself. Plain
 * HTML, CSS and JavaScript kept as strings in TypeScript modules, so `npm run build` ships them
 * with no copy step. The page makes no request beyond the reception: no fonts, no CDN.
 */

/** Only what the page needs: its own script, style and API. Trace links are navigation. */
export const STOREFRONT_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ')

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** The page; `jaegerUi` is where the trace links point (JAEGER_UI_URL). */
export function storefrontPage(jaegerUi: URL): string {
  const jaeger = escapeHtml(jaegerUi.href.replace(/\/+$/, ''))
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Bakery</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/storefront.css">
<script src="/storefront.js" defer></script>
</head>
<body data-jaeger-ui="${jaeger}">
<header>
  <h1>Bakery</h1>
  <p>Order a pastry and watch it go from <em>pending</em> to <em>baking</em> to <em>finished</em>.</p>
</header>
<main>
  <section aria-labelledby="order-heading" class="panel">
    <h2 id="order-heading">Place an order</h2>
    <form id="order-form" action="/orders" method="post">
      <div class="field">
        <label for="customer">Your name</label>
        <input id="customer" name="customer" required maxlength="100" autocomplete="name" spellcheck="false">
      </div>
      <div class="field">
        <label for="pastry">Pastry</label>
        <input id="pastry" name="pastry" required maxlength="100" list="pastries" autocomplete="off">
        <datalist id="pastries">
          <option value="croissant"></option>
          <option value="pain au chocolat"></option>
          <option value="la bombe"></option>
          <option value="éclair"></option>
          <option value="kouign-amann"></option>
        </datalist>
      </div>
      <button type="submit" id="order-button">Order</button>
      <p id="form-message" role="status" aria-live="polite"></p>
    </form>
  </section>
  <section aria-labelledby="board-heading" class="panel">
    <h2 id="board-heading">Recent orders</h2>
    <p id="board-empty">No orders yet: yours will appear here and update as it bakes.</p>
    <ol id="board"></ol>
    <p id="announcer" class="visually-hidden" aria-live="polite"></p>
  </section>
</main>
<footer>
  <p>Each order links to its trace in <a href="${jaeger}/search?service=bakery-reception">Jaeger</a>.
  The API is described at <a href="/openapi.json">/openapi.json</a>; metrics are at <a href="/metrics">/metrics</a>.</p>
</footer>
</body>
</html>
`
}
