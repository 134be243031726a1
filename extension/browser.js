// One name for the extension APIs in both browsers: Firefox's `browser`, else Chromium's `chrome`
// (in Manifest V3 both answer with promises). No polyfill library. content.js, a classic script,
// says the same in its own first lines.

export const ext = globalThis.browser ?? globalThis.chrome;
