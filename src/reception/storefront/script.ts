import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/**
 * The storefront's script as the browser gets it: `browser/storefront.ts`, compiled on its own by
 * `npm run build` (DOM types, no Node) into `dist/browser/`. Both this module's places, src/ under
 * tsx and dist/ when built, are three folders below the package root.
 */
const COMPILED = join(__dirname, '..', '..', '..', 'dist', 'browser', 'storefront.js')

/** Read once, when the reception starts: a missing build is said at once, not on a page load. */
export function loadStorefrontScript(): string {
  try {
    return readFileSync(COMPILED, 'utf8')
  } catch (error) {
    throw new Error(
      `the storefront's script is not built (${COMPILED}: ${(error as Error).message}); run npm run build`,
    )
  }
}
