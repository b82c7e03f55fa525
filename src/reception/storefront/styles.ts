/** The storefront's stylesheet: system fonts, text contrast of at least 7:1, visible focus. */
export const storefrontStyles = `
:root {
  --ink: #1f1a17;
  --muted: #4a403a;
  --paper: #fdfaf6;
  --panel: #ffffff;
  --line: #8a7a70;
  --accent: #7a3410;
  --focus: #1a4fd6;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  line-height: 1.5;
  color: var(--ink);
  background: var(--paper);
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 52rem; padding: 1.5rem 1rem 3rem; }
header h1 { margin: 0; color: var(--accent); font-size: 2.25rem; }
footer { margin-top: 1.5rem; }
header p, footer p { color: var(--muted); margin-top: 0.25rem; }
main { display: grid; gap: 1.25rem; margin-top: 1.25rem; }
@media (min-width: 48rem) { main { grid-template-columns: 2fr 3fr; align-items: start; } }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 0.5rem; padding: 1rem 1.25rem; }
h2 { margin: 0 0 0.75rem; font-size: 1.25rem; }
.field { margin-bottom: 0.9rem; }
label { display: block; font-weight: 600; margin-bottom: 0.25rem; }
input {
  width: 100%; padding: 0.5rem 0.6rem; font: inherit; color: var(--ink);
  background: #fff; border: 2px solid var(--line); border-radius: 0.35rem;
}
button {
  font: inherit; font-weight: 600; color: #fff; background: var(--accent);
  border: 2px solid var(--accent); border-radius: 0.35rem; padding: 0.5rem 1.25rem; cursor: pointer;
}
button:hover { background: #5c260a; }
button:disabled { background: #6b625c; border-color: #6b625c; cursor: wait; }
input:focus-visible, button:focus-visible, a:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
a { color: #1a47b8; }
#form-message { min-height: 1.5em; margin: 0.75rem 0 0; }
#form-message.error { color: #9b1c1c; font-weight: 600; }
#board { list-style: none; margin: 0; padding: 0; display: grid; gap: 0.6rem; }
.order { border: 1px solid var(--line); border-radius: 0.4rem; padding: 0.6rem 0.75rem; display: grid; gap: 0.25rem; }
.order-title { font-weight: 600; }
.order-meta { display: flex; flex-wrap: wrap; gap: 0.4rem 1rem; align-items: center; color: var(--muted); font-size: 0.95rem; }
.status { display: inline-block; font-weight: 700; border-radius: 999px; padding: 0 0.6rem; border: 1px solid currentColor; }
.status[data-status="pending"] { color: #5c4300; background: #fff4c7; }
.status[data-status="baking"] { color: #7a2e00; background: #ffe3d1; }
.status[data-status="finished"] { color: #0b5124; background: #daf5e1; }
.steps { display: flex; gap: 0.3rem; margin: 0; padding: 0; list-style: none; }
.steps li { height: 0.4rem; flex: 1; border-radius: 999px; background: #e4dcd6; }
.steps li.done { background: var(--accent); }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media (prefers-reduced-motion: no-preference) { .steps li { transition: background-color 0.3s; } }
`
