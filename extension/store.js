// What the extension keeps, in its own local storage and nowhere else (no page can read it): the
// options (target, days, uses, domain) and one record per alias it made, with the token that
// manages it. One key per alias ("alias:<id>"): the service worker adds and the popup removes
// without reading and rewriting a shared list, so neither can lose the other's change.

import { ext } from "./browser.js";
import { settings } from "./config.js";

const OPTIONS = "options";
const ALIAS_PREFIX = "alias:";

/** The options, with the server's defaults where none were saved. target "" means not set. */
export async function readOptions() {
  const saved = (await ext.storage.local.get(OPTIONS))[OPTIONS] || {};
  return { target: "", days: settings.defaultDays, uses: null, domain: null, ...saved };
}

export function saveOptions({ target, days, uses, domain }) {
  return ext.storage.local.set({ [OPTIONS]: { target, days, uses, domain } });
}

/** Keeps a new alias: what the popup shows before asking the server, and the token to ask with;
 * madeAt (this browser's clock, in ms) orders the list, two made within a second too. */
export function rememberAlias(alias, site) {
  const record = { id: alias.id, address: alias.address, token: alias.token, site, madeAt: Date.now() };
  return ext.storage.local.set({ [ALIAS_PREFIX + alias.id]: record });
}

/** Every alias this browser made and has not forgotten, the newest first. */
export async function rememberedAliases() {
  const everything = await ext.storage.local.get(null);
  return Object.entries(everything)
    .filter(([key]) => key.startsWith(ALIAS_PREFIX))
    .map(([, record]) => record)
    .sort((a, b) => (b.madeAt || 0) - (a.madeAt || 0));
}

export function forgetAlias(id) {
  return ext.storage.local.remove(ALIAS_PREFIX + id);
}
