/* tempalias bookmarklet: fills an email field of the page it runs on with a fresh alias.
 *
 * Loaded once per page by the bookmarklet link, which then calls window.__tempalias.run(options)
 * with {base, target, days, uses[, domain]}. A guest on someone else's page: no libraries, one global name,
 * its overlay in a shadow root (the page's CSS cannot reach in, ours cannot leak out),
 * Escape cancels, and on any failure the field is left exactly as it was.
 */
(function () {
  "use strict";
  if (window.__tempalias) return;

  var STYLE = [
    ":host { all: initial; }",
    ".panel { position: fixed; top: 16px; right: 16px; width: min(360px, calc(100vw - 32px));",
    "  box-sizing: border-box; padding: 14px 16px; border-radius: 12px; background: #ffffff;",
    "  color: #1d2421; border: 1px solid #d3d9d5; box-shadow: 0 10px 30px rgba(0,0,0,.18);",
    "  font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; text-align: left; }",
    ".title { display: flex; align-items: center; gap: 8px; font-weight: 700; margin: 0 0 6px; }",
    ".dot { width: 10px; height: 10px; border-radius: 50%; background: #0f6b5c; }",
    ".message { margin: 0; }",
    ".message.failed { color: #a8322b; font-weight: 600; }",
    ".address { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-weight: 700; }",
    ".actions { display: flex; gap: 8px; margin-top: 10px; align-items: center; }",
    "button { font: inherit; font-weight: 600; padding: 6px 12px; border-radius: 8px; cursor: pointer;",
    "  border: 1.5px solid #d3d9d5; background: transparent; color: inherit; }",
    "button:focus-visible, a:focus-visible { outline: 3px solid #2b59c3; outline-offset: 2px; }",
    "a { color: #0f6b5c; font-weight: 600; }",
    ".highlight { position: fixed; pointer-events: none; border: 3px solid #0f6b5c;",
    "  border-radius: 6px; background: rgba(15,107,92,.12); box-sizing: border-box; display: none; }",
    "@media (prefers-color-scheme: dark) {",
    "  .panel { background: #1a211e; color: #e6ebe8; border-color: #34403b; }",
    "  .dot { background: #5cc8b2; } a { color: #5cc8b2; } .message.failed { color: #f2877f; }",
    "  button { border-color: #34403b; } }",
  ].join("\n");

  var session = null;

  function fillable(element) {
    if (!element || element.tagName !== "INPUT") return false;
    var type = (element.getAttribute("type") || "text").toLowerCase();
    return (type === "email" || type === "text") && !element.disabled && !element.readOnly;
  }

  function plural(count, one, many) {
    return count + " " + (count === 1 ? one : many);
  }

  function waitInWords(seconds) {
    if (seconds < 60) return plural(Math.max(1, seconds), "second", "seconds");
    if (seconds < 3600) return plural(Math.ceil(seconds / 60), "minute", "minutes");
    return plural(Math.ceil(seconds / 3600), "hour", "hours");
  }

  function failureText(status, retryAfter) {
    if (status === 429) {
      return "Too many new aliases just now. Try again in " +
        (retryAfter ? waitInWords(retryAfter) : "a little while") + ". The field was left unchanged.";
    }
    if (status === 422) return "tempalias refused these settings; open tempalias to check them. The field was left unchanged.";
    if (status === 403) return "Your network is on a spam block list. The field was left unchanged.";
    if (status === 503) return "tempalias is having a short break. Try again in a moment. The field was left unchanged.";
    if (status) return "tempalias answered with error " + status + ". The field was left unchanged.";
    return "tempalias could not be reached (network trouble, or this page's security policy). The field was left unchanged.";
  }

  /** Set the value the way typing would, so frameworks that wrap the setter notice too. */
  function fillIn(input, value) {
    var setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set;
    setter.call(input, value);
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function Session(options) {
    this.options = options;
    this.host = document.createElement("div");
    // CSSOM, not a style attribute: a page's CSP may forbid inline style attributes.
    var hostStyle = this.host.style;
    hostStyle.setProperty("all", "initial", "important");
    hostStyle.setProperty("position", "fixed", "important");
    hostStyle.setProperty("inset", "0", "important");
    hostStyle.setProperty("pointer-events", "none", "important");
    hostStyle.setProperty("z-index", "2147483647", "important");
    this.host.setAttribute("data-tempalias", "");
    var root = this.host.attachShadow({ mode: "open" });
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
    root.adoptedStyleSheets = [sheet];

    this.highlight = document.createElement("div");
    this.highlight.className = "highlight";
    this.panel = document.createElement("div");
    this.panel.className = "panel";
    this.panel.style.pointerEvents = "auto";
    this.panel.setAttribute("role", "dialog");
    this.panel.setAttribute("aria-label", "tempalias");
    var title = document.createElement("p");
    title.className = "title";
    var dot = document.createElement("span");
    dot.className = "dot";
    title.append(dot, document.createTextNode("tempalias"));
    this.message = document.createElement("p");
    this.message.className = "message";
    this.message.setAttribute("role", "status");
    this.message.setAttribute("aria-live", "polite");
    this.actions = document.createElement("div");
    this.actions.className = "actions";
    var close = document.createElement("button");
    close.type = "button";
    close.textContent = "Cancel";
    this.closeButton = close;
    this.actions.append(close);
    this.panel.append(title, this.message, this.actions);
    root.append(this.highlight, this.panel);

    var self = this;
    close.addEventListener("click", function () { self.end(); });
    this.onKey = function (event) {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        self.end();
      }
    };
    this.onMove = function (event) { self.hover(event.target); };
    this.onClick = function (event) { self.pick(event); };
    document.addEventListener("keydown", this.onKey, true);
    (document.body || document.documentElement).append(this.host);
  }

  Session.prototype.say = function (text, failed) {
    this.message.className = failed ? "message failed" : "message";
    this.message.textContent = text;
  };

  Session.prototype.startPicking = function () {
    this.say("Click the email field to fill in a new alias. Press Esc to cancel.");
    document.addEventListener("mouseover", this.onMove, true);
    document.addEventListener("click", this.onClick, true);
  };

  Session.prototype.stopPicking = function () {
    document.removeEventListener("mouseover", this.onMove, true);
    document.removeEventListener("click", this.onClick, true);
    this.highlight.style.display = "none";
  };

  Session.prototype.hover = function (element) {
    if (!fillable(element)) {
      this.highlight.style.display = "none";
      return;
    }
    var box = element.getBoundingClientRect();
    var style = this.highlight.style;
    style.display = "block";
    style.left = box.left - 4 + "px";
    style.top = box.top - 4 + "px";
    style.width = box.width + 8 + "px";
    style.height = box.height + 8 + "px";
  };

  Session.prototype.pick = function (event) {
    if (event.target === this.host) return; // a click on our own panel
    event.preventDefault();
    event.stopPropagation();
    if (!fillable(event.target)) {
      this.say("That is not a text field. Click an email field, or press Esc to cancel.", true);
      return;
    }
    this.stopPicking();
    this.fill(event.target);
  };

  Session.prototype.fill = function (input) {
    var self = this;
    var options = this.options;
    this.say("Making a new alias…");
    var order = { target: options.target, days: options.days, uses: options.uses };
    if (options.domain) order.domain = options.domain; // else the service's first domain
    if (options.replies) order.replies = true;
    fetch(options.base + "/api/v1/aliases", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(order),
      credentials: "omit",
      referrerPolicy: "no-referrer",
    }).then(function (answer) {
      if (!answer.ok) {
        var retry = parseInt(answer.headers.get("Retry-After") || "", 10);
        self.say(failureText(answer.status, isNaN(retry) ? null : retry), true);
        self.closeButton.textContent = "Close";
        return;
      }
      return answer.json().then(function (alias) {
        if (!self.host.isConnected) return; // cancelled meanwhile: leave the field alone
        fillIn(input, alias.address);
        self.done(alias);
      });
    }).catch(function () {
      self.say(failureText(0, null), true);
      self.closeButton.textContent = "Close";
    });
  };

  Session.prototype.done = function (alias) {
    this.message.textContent = "";
    var address = document.createElement("span");
    address.className = "address";
    address.textContent = alias.address;
    var options = this.options;
    var limits = plural(options.days, "day", "days") + (options.uses ?
      " or " + plural(options.uses, "message", "messages") + ", whichever comes first," : ",");
    this.message.append("Filled in ", address, ". It forwards to you for " + limits +
      " then it is erased.");
    var manage = document.createElement("a");
    manage.href = this.options.base + "/#manage/" + encodeURIComponent(alias.id) + "/" + encodeURIComponent(alias.token);
    manage.target = "_blank";
    manage.rel = "noopener noreferrer";
    manage.textContent = "Manage it";
    this.closeButton.textContent = "Close";
    this.actions.prepend(manage);
  };

  Session.prototype.end = function () {
    this.stopPicking();
    document.removeEventListener("keydown", this.onKey, true);
    this.host.remove();
    if (session === this) session = null;
  };

  function run(options) {
    if (session) session.end();
    session = new Session(options);
    var focused = document.activeElement;
    if (fillable(focused)) session.fill(focused);
    else session.startPicking();
  }

  window.__tempalias = Object.freeze({ run: run });
})();
