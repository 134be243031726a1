// The context-menu entry: on an editable field, "Fill in a new alias" does what the field's button
// does, for the field the menu was opened on. The content script of that frame knows which field
// that was; a page opened before the extension was installed has none yet, and the click grants
// activeTab, which lets us inject it there (scripting) and ask again.

import { ext } from "./browser.js";

export const MENU_ID = "tempalias-fill";
const FILL = { kind: "fill-from-menu" };

/** (Re)creates the entry: at install and at each browser start, which Firefox's event pages need. */
export async function installMenu() {
  await ext.contextMenus.removeAll();
  ext.contextMenus.create({ id: MENU_ID, title: "Fill in a new alias (tempalias)", contexts: ["editable"] });
}

export async function fillFromMenu(info, tab) {
  if (info.menuItemId !== MENU_ID || !tab || tab.id === undefined) return;
  const frame = { frameId: info.frameId ?? 0 };
  try {
    await ext.tabs.sendMessage(tab.id, FILL, frame);
  } catch {
    // no content script listening in that frame: put one there, then ask it
    await ext.scripting.executeScript({ target: { tabId: tab.id, frameIds: [frame.frameId] }, files: ["content.js"] });
    await ext.tabs.sendMessage(tab.id, FILL, frame);
  }
}
