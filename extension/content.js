/* tempalias extension, content script: a small button inside the right edge of each email field
 * of a page, which fills in a fresh alias; and the context menu's "Fill in a new alias".
 *
 * A guest on every page. It runs in the extension's own world (the page sees none of its
 * variables); each button is drawn in a shadow root of a host element of our own tag, fixed over
 * the field and attached outside the page's content, so the page's CSS cannot reach in and the
 * page's layout is not touched. It never calls the server: the background makes the alias and
 * answers the address alone, so the token and the target never come near the page.
 * A classic script (content scripts cannot be modules): the context menu may inject it again
 * into a page opened before the extension was installed, and a second run does nothing.
 */
(function () {
  "use strict";
  const ext = globalThis.browser ?? globalThis.chrome;
  if (globalThis.__tempaliasFieldButtons) return;
  globalThis.__tempaliasFieldButtons = true;

  const HOST_TAG = "tempalias-fill";
  const EMAIL_WORDS = /e-?mail/i;
  const BUTTON = 22; // px, square
  const INSET = 4; // px between the button and the field's right edge
  const SMALLEST_FIELD = { width: 48, height: 16 };
  const NOTE_ROOM = 96; // px a message needs below the field, else it goes above
  const CHANGES_PAUSE_MS = 150;
  const UPDATED = "The tempalias extension was updated or stopped: reload this page and try again.";

  // How the button and its note look, set inline on each element through the CSSOM: no page's
  // Content-Security-Policy has a say over that, in either browser (a content script in Firefox
  // can neither adopt a constructed sheet nor count on a <style> that a strict page allows). The
  // one sheet adds what inline styles cannot say, hover and keyboard focus, where it applies.
  const DARK = window.matchMedia("(prefers-color-scheme: dark)").matches;
  const COLOURS = DARK
    ? { surface: "#1a211e", text: "#e6ebe8", border: "#34403b", alert: "#f2877f", link: "#5cc8b2", muted: "#a3afa9" }
    : { surface: "#ffffff", text: "#1d2421", border: "#d3d9d5", alert: "#a8322b", link: "#0f6b5c", muted: "#515c57" };
  const FONT = "13px/1.4 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  const RESET = { margin: "0", padding: "0", border: "0", background: "transparent", "box-sizing": "border-box" };
  const LOOK = {
    fill: {
      ...RESET, display: "flex", "align-items": "center", "justify-content": "center", width: "100%",
      height: "100%", "border-radius": "6px", background: "#0f6b5c", color: "#ffffff", cursor: "pointer",
      "box-shadow": "0 1px 2px rgba(0,0,0,.25)",
    },
    icon: { display: "block", width: "16px", height: "16px" },
    note: {
      ...RESET, display: "none", position: "absolute", right: `-${INSET}px`, width: "max-content",
      "max-width": "min(320px, 90vw)", padding: "8px 30px 8px 10px", border: `1px solid ${COLOURS.border}`,
      "border-left": `4px solid ${COLOURS.alert}`, "border-radius": "8px", background: COLOURS.surface,
      color: COLOURS.text, "box-shadow": "0 8px 24px rgba(0,0,0,.18)", font: FONT, "text-align": "left",
    },
    open: {
      ...RESET, display: "none", "margin-top": "4px", font: FONT, "font-weight": "600", color: COLOURS.link,
      "text-decoration": "underline", cursor: "pointer",
    },
    close: {
      ...RESET, position: "absolute", top: "4px", right: "6px", width: "20px", height: "20px",
      "border-radius": "4px", font: "16px/20px system-ui, sans-serif", color: COLOURS.muted,
      "text-align": "center", cursor: "pointer",
    },
  };
  const EXTRAS = `
    .fill:hover { background: #0b5549 !important; }
    .fill[aria-busy="true"] { cursor: progress !important; opacity: .6 !important; }
    button:focus-visible { outline: 3px solid #2b59c3 !important; outline-offset: 2px !important; }`;

  // The host's own box, set inline with !important: a page's `* { ... !important }` loses to it.
  const HOST_STYLE = [
    ["all", "initial"], ["position", "fixed"], ["display", "block"], ["z-index", "2147483647"],
    ["margin", "0"], ["padding", "0"], ["border", "0"], ["width", `${BUTTON}px`], ["height", `${BUTTON}px`],
  ];

  const fields = new Map(); // an email field -> its FieldButton
  let menuTarget = null; // the element the context menu was last opened on

  function element(tag, attributes = {}, text = "") {
    const made = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
    if (text) made.textContent = text;
    return made;
  }

  function envelope() {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    const box = document.createElementNS(ns, "rect");
    for (const [name, value] of Object.entries({ x: "3", y: "5.5", width: "18", height: "13", rx: "2.5" })) {
      box.setAttribute(name, value);
    }
    const flap = document.createElementNS(ns, "path");
    flap.setAttribute("d", "M4.5 7.5l7.5 5.5 7.5-5.5");
    for (const part of [box, flap]) {
      part.setAttribute("fill", "none");
      part.setAttribute("stroke", "currentColor");
      part.setAttribute("stroke-width", "2");
      part.setAttribute("stroke-linejoin", "round");
    }
    svg.append(box, flap);
    return svg;
  }

  function look(target, name) {
    for (const [property, value] of Object.entries(LOOK[name])) target.style.setProperty(property, value);
    return target;
  }

  /** The extras of EXTRAS: a constructed sheet where the browser takes one, else <style>. */
  function addExtras(root) {
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(EXTRAS);
      root.adoptedStyleSheets = [sheet];
    } catch {
      root.append(element("style", {}, EXTRAS));
    }
  }

  /** A text field the browser lets us fill: type email or text, enabled, writable. */
  function fillable(target) {
    if (!(target instanceof HTMLInputElement) || target.disabled || target.readOnly) return false;
    const type = (target.getAttribute("type") || "text").toLowerCase();
    return type === "email" || type === "text";
  }

  /** An email field: type email, or a text field whose name, id, autocomplete or label says so. */
  function saysEmail(input) {
    if ((input.getAttribute("type") || "").toLowerCase() === "email") return true;
    const said = [input.name, input.id, input.getAttribute("autocomplete"), input.getAttribute("aria-label"),
      ...Array.from(input.labels || [], (label) => label.textContent)];
    return said.some((text) => text && EMAIL_WORDS.test(text));
  }

  /** The field's box when a person can see it and reach its right edge, else null. */
  function visibleBox(input) {
    if (!input.isConnected) return null;
    if (input.checkVisibility && !input.checkVisibility({ opacityProperty: true, visibilityProperty: true })) {
      return null;
    }
    const box = input.getBoundingClientRect();
    if (box.width < SMALLEST_FIELD.width || box.height < SMALLEST_FIELD.height) return null;
    const x = box.right - INSET - BUTTON / 2;
    const y = box.top + box.height / 2;
    if (x < 0 || y < 0 || x >= window.innerWidth || y >= window.innerHeight) return null;
    // Whatever is in front of that spot, our own buttons aside, must be the field itself: not a
    // dialog over it, nor the edge of a scrolled box that hides it.
    const front = document.elementsFromPoint(x, y).find((found) => found.localName !== HOST_TAG);
    return front === input ? box : null;
  }

  class FieldButton {
    constructor(input) {
      this.input = input;
      this.busy = false;
      this.host = document.createElement(HOST_TAG);
      for (const [name, value] of HOST_STYLE) this.host.style.setProperty(name, value, "important");
      const root = this.host.attachShadow({ mode: "open" });
      addExtras(root);
      this.button = look(element("button", {
        type: "button", class: "fill", "data-tempalias-fill": "", tabindex: "-1",
        "aria-label": "Fill in a new alias (tempalias)", title: "Fill in a new alias (tempalias)",
      }), "fill");
      this.button.append(look(envelope(), "icon"));
      this.note = look(element("div", { class: "note", role: "status", "aria-live": "polite" }), "note");
      this.noteText = element("span", { class: "text" });
      this.openOptions = look(element("button", { type: "button", class: "open" }, "Open the tempalias options"), "open");
      const close = look(element("button", { type: "button", class: "close", "aria-label": "Close" }, "×"), "close");
      this.note.append(this.noteText, this.openOptions, close);
      root.append(this.button, this.note);

      // A press on our button is ours alone: the field keeps its focus, and the page's "click
      // outside closes the dialog" handlers never hear of it.
      for (const type of ["pointerdown", "mousedown", "pointerup", "mouseup", "click", "touchstart"]) {
        this.host.addEventListener(type, (event) => event.stopPropagation());
      }
      this.button.addEventListener("mousedown", (event) => event.preventDefault());
      // Only the person clicks: the shadow root is open (the page can reach the button), and a
      // page's own .click() or dispatched event would otherwise make aliases at will, spending
      // the owner's creation limits and filling the popup.
      this.button.addEventListener("click", (event) => { if (event.isTrusted) this.fill(); });
      this.openOptions.addEventListener("click", () => {
        ext.runtime.sendMessage({ kind: "open-options" }).catch(() => this.say(UPDATED, false));
      });
      close.addEventListener("click", () => this.quiet());
      input.addEventListener("input", (event) => { if (event.isTrusted) this.quiet(); });
      this.resized = new ResizeObserver(schedule);
      this.resized.observe(input);
      document.documentElement.append(this.host);
    }

    place(box) {
      const style = this.host.style;
      if (!box) {
        style.setProperty("display", "none", "important");
        return;
      }
      style.setProperty("display", "block", "important");
      style.setProperty("left", `${Math.round(box.right - INSET - BUTTON)}px`, "important");
      style.setProperty("top", `${Math.round(box.top + (box.height - BUTTON) / 2)}px`, "important");
      const above = box.bottom + NOTE_ROOM > window.innerHeight; // no room below: above the field
      this.note.style.setProperty("top", above ? "auto" : "calc(100% + 8px)");
      this.note.style.setProperty("bottom", above ? "calc(100% + 8px)" : "auto");
    }

    say(message, fixInOptions) {
      this.noteText.textContent = message;
      this.openOptions.style.setProperty("display", fixInOptions ? "block" : "none");
      this.note.style.setProperty("display", "block");
    }

    quiet() {
      this.note.style.setProperty("display", "none");
    }

    async fill() {
      if (this.busy) return;
      this.busy = true;
      this.button.setAttribute("aria-busy", "true");
      this.quiet();
      let answer;
      try {
        answer = await ext.runtime.sendMessage({ kind: "create-alias" });
      } catch {
        answer = { ok: false, message: UPDATED };
      } finally {
        this.busy = false;
        this.button.removeAttribute("aria-busy");
      }
      if (answer && answer.ok) put(this.input, answer.address);
      else this.say((answer && answer.message) || "Something went wrong; try again.", answer && answer.fixInOptions);
    }

    remove() {
      this.resized.disconnect();
      this.host.remove();
    }
  }

  /** Sets the value as typing would end, then tells the page's scripts: `input`, then `change`.
   * The setter is this world's, the element's own: a framework that wraps the value in the page's
   * world does not see it set, so it reads the new value when the input event comes. */
  function put(input, address) {
    input.focus();
    input.value = address;
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // Whether buttons belong on this page: not on the tempalias server's own page, whose email
  // field takes your real address. Asked of the background once, when a first email field shows.
  let welcome = null; // null: not asked; "asking"; then true or false
  function askWelcome() {
    welcome = "asking";
    ext.runtime.sendMessage({ kind: "server-page?" }).then((answer) => {
      welcome = !(answer && answer.serverPage);
      schedule();
    }, () => {
      welcome = false; // the extension was updated or removed: this script has no one to ask
    });
  }

  function scan() {
    const found = Array.from(document.querySelectorAll("input"))
      .filter((input) => !fields.has(input) && fillable(input) && saysEmail(input));
    if (found.length && welcome === null) askWelcome();
    if (welcome === true) for (const input of found) fields.set(input, new FieldButton(input));
    for (const [input, field] of fields) {
      if (!input.isConnected || !fillable(input) || !(field.chosen || saysEmail(input))) {
        field.remove();
        fields.delete(input);
      } else {
        field.place(visibleBox(input));
      }
    }
  }

  // The buttons follow their fields at the next frame when something moves (scroll, resize);
  // changes of the page's DOM, which some pages make all the time, are looked at a few times a
  // second at most, since each look may make the browser lay the page out.
  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      scan();
    });
  }

  let changed = null;
  function scheduleAfterChanges() {
    if (changed !== null) return;
    changed = setTimeout(() => {
      changed = null;
      schedule();
    }, CHANGES_PAUSE_MS);
  }

  /** A change of the page's own, not one of ours (our hosts move as we place them). */
  function theirs(record) {
    if (record.target.localName === HOST_TAG) return false;
    if (record.type !== "childList") return true;
    const nodes = [...record.addedNodes, ...record.removedNodes];
    return nodes.some((node) => node.localName !== HOST_TAG);
  }

  new MutationObserver((records) => {
    if (records.some(theirs)) scheduleAfterChanges();
  }).observe(document.documentElement, {
    childList: true, subtree: true, attributes: true,
    attributeFilter: ["type", "name", "id", "autocomplete", "aria-label", "style", "class", "hidden", "disabled", "readonly"],
  });
  document.addEventListener("scroll", schedule, { capture: true, passive: true });
  for (const type of ["transitionend", "animationend"]) document.addEventListener(type, schedule, true);
  window.addEventListener("resize", schedule, { passive: true });

  // The context menu: remember the field it opens on; fill it when the background asks.
  document.addEventListener("contextmenu", (event) => { menuTarget = event.composedPath()[0]; }, true);
  ext.runtime.onMessage.addListener((message, sender, sendResponse) => {
    if (!message || message.kind !== "fill-from-menu") return false;
    const input = [menuTarget, document.activeElement].find(fillable);
    if (input) {
      let field = fields.get(input);
      if (!field) {
        field = new FieldButton(input);
        field.chosen = true; // the person chose it: it keeps its button, email field or not
        fields.set(input, field);
        field.place(visibleBox(input));
      }
      field.fill();
    }
    sendResponse({ filled: Boolean(input) });
    return false;
  });

  scan();
})();
