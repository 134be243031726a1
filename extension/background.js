// The extension's background (Chromium's service worker, Firefox's event page): the one place that
// makes an alias. A content script asks with {kind: "create-alias"} and gets back the address
// alone, or a short message to show; the order's target and the alias's token never leave this
// context, so the page the button sits in cannot see them, whatever it wraps.

import { ext } from "./browser.js";
import { AliasProblem, createAlias } from "./api.js";
import { fillFromMenu, installMenu } from "./menu.js";
import { settings } from "./config.js";
import { readOptions, rememberAlias } from "./store.js";

const NO_TARGET = "Set the address your aliases forward to first.";

const SERVER_ORIGIN = new URL(settings.publicUrl).origin;

/** Whether a content script runs on the server's own page, where no button belongs. */
function onServerPage(sender) {
  try {
    return new URL(sender.url).origin === SERVER_ORIGIN;
  } catch {
    return false;
  }
}

/** The site a field was on, as the popup lists it: the tab's host, else the frame's. */
function siteOf(sender) {
  for (const url of [sender.tab && sender.tab.url, sender.url]) {
    try {
      if (url) return new URL(url).host;
    } catch {
      // not a URL with a host (about:blank, a data: frame): try the next
    }
  }
  return "";
}

/** @returns {ok: true, address} or {ok: false, message, fixInOptions} for the content script */
async function makeAlias(sender) {
  const options = await readOptions();
  if (!options.target) return { ok: false, message: NO_TARGET, fixInOptions: true };
  try {
    const alias = await createAlias(options);
    await rememberAlias(alias, siteOf(sender));
    return { ok: true, address: alias.address };
  } catch (problem) {
    const known = problem instanceof AliasProblem ? problem : new AliasProblem("Something went wrong; try again.");
    return { ok: false, message: known.message, fixInOptions: known.fixInOptions };
  }
}

// Listeners are added at the top level, as an event page and a service worker must: the browser
// starts this script for an event and delivers it to the listeners added while it runs.
ext.runtime.onInstalled.addListener(installMenu);
ext.runtime.onStartup.addListener(installMenu);
ext.contextMenus.onClicked.addListener(fillFromMenu);
ext.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (sender.id !== ext.runtime.id || !message) return false;
  if (message.kind === "create-alias") {
    makeAlias(sender).then(sendResponse);
    return true; // the answer comes later
  }
  if (message.kind === "server-page?") sendResponse({ serverPage: onServerPage(sender) });
  if (message.kind === "open-options") ext.runtime.openOptionsPage();
  return false;
});
