// "Use your own domain": register a domain (#your-domain), then its management view
// (#domain/<domain>/<token>, the token in the fragment only): the DNS records to publish, a check
// that says what is still missing, aliases at the domain once it is active, and its removal.
//
// What the server says about someone's DNS (the problems a check found) quotes records from
// zones that strangers control: it is only ever set as text, never parsed as HTML.

import { settings } from "/config.js";
import {
  ApiProblem, createAlias, fetchDomain, registerDomain, removeDomain, verifyDomain,
} from "/static/api.js";
import { OrderForm } from "/static/order.js";
import { recall, remember } from "/static/remember.js";
import { dateInWords, fateInWords, repliesInWords } from "/static/words.js";

const $ = (id) => document.getElementById(id);
const PENDING = "pending";
const ACTIVE = "active";
const SUSPENDED = "suspended";

const STATE_WORDS = {
  [PENDING]: "Waiting for its DNS records",
  [ACTIVE]: "Active",
  [SUSPENDED]: "Suspended: its records are gone",
};

const RECORDS_TITLE = {
  [PENDING]: "Publish these two records",
  [ACTIVE]: "Keep these records published",
  [SUSPENDED]: "Put these records back",
};

function dateOr(iso, otherwise) {
  return iso ? dateInWords(iso) : otherwise;
}

const RECORDS_HINT = {
  [PENDING]: (view) => "Add them where your domain's DNS is managed (often where you bought the " +
    "domain), then press Check now. Names are written in full: if your provider adds your zone's " +
    "name by itself, leave that part out. Unless it is verified by " +
    `${dateOr(view.expires_at, "7 days from now")}, this registration is erased.`,
  [ACTIVE]: () => "tempalias checks them regularly. If they disappear, mail to your aliases is " +
    "held back, and if they stay gone for a few days, the domain and its aliases are erased.",
  [SUSPENDED]: (view) => "Until they are back, mail to your aliases is held back. If they are not " +
    `back by ${dateOr(view.erased_at, "the end of the grace period")}, the domain and every ` +
    "alias made there are erased.",
};

const DOMAIN_SHAPE = /^(?=.{1,253}$)([^.\s@/:]{1,63}\.)+[^.\s@/:]{2,63}$/u;

/** The domain as typed, tidied (case, a final dot); null when it cannot be one. */
function typedDomain(text) {
  const domain = text.trim().toLowerCase().replace(/\.$/, "");
  return DOMAIN_SHAPE.test(domain) ? domain : null;
}

export function domainLink(domain, token) {
  return `${settings.publicUrl}/#domain/${encodeURIComponent(domain)}/${encodeURIComponent(token)}`;
}

function aliasLink(alias) {
  return `${settings.publicUrl}/#manage/${encodeURIComponent(alias.id)}/${encodeURIComponent(alias.token)}`;
}

function aliasCountInWords(count) {
  if (!Number.isFinite(count)) return "–";
  return count === 0 ? "None yet" : String(count);
}

/** One record to publish: its name and value, each with a copy button. */
function recordItem(record, index) {
  const item = document.createElement("li");
  item.className = "record";
  const type = String(record.type);
  const title = document.createElement("p");
  title.className = "record-type";
  title.textContent = `${type} record`;
  const rows = document.createElement("dl");
  for (const [part, text] of [["name", record.name], ["value", record.value]]) {
    const row = document.createElement("div");
    row.className = "record-row";
    const term = document.createElement("dt");
    term.textContent = part === "name" ? "Name" : "Value";
    const detail = document.createElement("dd");
    const code = document.createElement("code");
    code.id = `record-${index}-${part}`;
    code.textContent = String(text);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy small";
    copy.textContent = "Copy";
    copy.dataset.copyFrom = code.id;
    copy.dataset.copyWhat = `The ${type} record's ${part}`;
    copy.setAttribute("aria-label", `Copy the ${type} record's ${part}`);
    detail.append(code, copy);
    row.append(term, detail);
    rows.append(row);
  }
  item.append(title, rows);
  const mx = /^(\d+)\s+(\S+)$/.exec(String(record.value));
  if (type === "MX" && mx) {
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = `Some providers ask for the priority (${mx[1]}) and the mail server (${mx[2]}) separately.`;
    item.append(hint);
  }
  return item;
}

export class DomainViews {
  /**
   * @param api the API's base URL ("" for the page's own origin)
   * @param ownDomains () => the operator's domains (no alias may forward to them)
   */
  constructor({ api, ownDomains }) {
    this.api = api;
    this.ownDomains = ownDomains;
    this.current = null; // {domain, token, view}: the domain the management view shows
    this.registered = null; // the answer to the registration just made, records and all
    this.aliasForm = new OrderForm({
      fields: {
        local_part: $("own-local"), target: $("own-target"), days: $("own-days"), uses: $("own-uses"),
        replies: $("own-replies"),
      },
      formError: $("domain-alias-error"),
      summary: $("own-summary"),
      ownDomains: () => [...this.ownDomains(), ...(this.current ? [this.current.domain] : [])],
    });
    $("own-form").addEventListener("submit", (event) => this.register(event));
    $("own-domain").addEventListener("input", () => this.clearRegisterErrors());
    $("check-button").addEventListener("click", () => this.check());
    $("domain-alias-form").addEventListener("submit", (event) => this.createAlias(event));
    $("domain-alias-another").addEventListener("click", () => {
      $("domain-alias-result").hidden = true;
      $("domain-alias-form").hidden = false;
      $("own-local").value = "";
      $("own-local").focus();
    });
    $("domain-remove-button").addEventListener("click", () => {
      $("domain-remove-confirm").hidden = false;
      $("domain-remove-no").focus();
    });
    $("domain-remove-no").addEventListener("click", () => {
      $("domain-remove-confirm").hidden = true;
      $("domain-remove-button").focus();
    });
    $("domain-remove-yes").addEventListener("click", () => this.remove());
  }

  // --- #your-domain: the registration form

  start() {
    this.clearRegisterErrors();
    $("own").focus();
  }

  clearRegisterErrors() {
    $("own-domain-error").textContent = "";
    $("own-domain").removeAttribute("aria-invalid");
    $("own-form-error").textContent = "";
  }

  showRegisterError(message, { field }) {
    if (field) {
      $("own-domain-error").textContent = message;
      $("own-domain").setAttribute("aria-invalid", "true");
      $("own-domain").focus();
    } else {
      $("own-form-error").textContent = message;
    }
  }

  async register(event) {
    event.preventDefault();
    this.clearRegisterErrors();
    const text = $("own-domain").value;
    const domain = typedDomain(text);
    if (!text.trim()) {
      this.showRegisterError("Enter the domain you want aliases at.", { field: true });
      return;
    }
    if (!domain) {
      this.showRegisterError("Enter a domain name only, such as temp.example.org.", { field: true });
      return;
    }
    if (this.ownDomains().some((own) => domain === own || domain.endsWith("." + own))) {
      this.showRegisterError("That is one of tempalias's own domains; enter one of yours.", { field: true });
      return;
    }
    const button = $("own-button");
    button.disabled = true;
    try {
      const answer = await registerDomain(this.api, domain);
      this.registered = answer;
      $("own-domain").value = "";
      window.location.hash = `#domain/${encodeURIComponent(answer.domain)}/${encodeURIComponent(answer.token)}`;
    } catch (problem) {
      const known = problem instanceof ApiProblem ? problem : new ApiProblem("Something went wrong. Please try again.");
      this.showRegisterError(known.message, { field: known.field === "domain" });
    } finally {
      button.disabled = false;
    }
  }

  // --- #domain/<domain>/<token>: the management view

  /** The view's one live line: loading, news, or why there is nothing (more) to show. */
  status(text, { gone = false, good = false } = {}) {
    const status = $("domain-status");
    status.textContent = text;
    status.classList.toggle("is-gone", gone);
    status.classList.toggle("is-good", good);
  }

  async open(domain, token) {
    const opened = { domain, token, view: null };
    this.current = opened;
    $("domain-details").hidden = true;
    $("domain-remove-confirm").hidden = true;
    $("domain-alias-result").hidden = true;
    $("records").replaceChildren(); // nothing of the domain shown before stays in the page
    this.clearCheck();
    this.aliasForm.clearErrors();
    this.aliasForm.fill(recall());
    $("own-local").value = "";
    for (const name of document.querySelectorAll("[data-domain-name]")) name.textContent = domain;
    $("domain-name").textContent = domain;
    // The registration just made needs no look: its answer holds all there is to show. Once:
    // later (back, forward, after a removal) the server says what is true then.
    const fresh = this.registered && this.registered.domain === domain && this.registered.token === token
      ? this.registered : null;
    this.registered = null;
    this.status(fresh ? "" : "Loading…");
    try {
      const view = fresh || await fetchDomain(this.api, domain, token);
      if (this.current !== opened) return; // another link was opened meanwhile
      this.status("");
      this.show(view);
    } catch (problem) {
      if (this.current !== opened) return;
      this.status(problem instanceof ApiProblem ? problem.message : "Something went wrong.", { gone: true });
    }
    $("domain-view").focus();
  }

  show(view) {
    this.current.view = view;
    const state = STATE_WORDS[view.status] ? view.status : PENDING;
    const name = view.domain || this.current.domain;
    for (const element of document.querySelectorAll("[data-domain-name]")) element.textContent = name;
    $("domain-name").textContent = name;
    $("domain-state").textContent = STATE_WORDS[state];
    $("domain-aliases").textContent = aliasCountInWords(state === PENDING ? 0 : Number(view.aliases));
    $("domain-checked").textContent = view.last_check ? dateInWords(view.last_check) : "Not yet";
    $("records-title").textContent = RECORDS_TITLE[state];
    $("records-hint").textContent = RECORDS_HINT[state](view);
    if (state === SUSPENDED) {
      this.status(`Suspended since ${dateOr(view.suspended_at, "the last check")}: tempalias no ` +
        "longer finds your records, so mail to your aliases is held back.", { gone: true });
    }
    $("records").replaceChildren(...(view.records || []).map(recordItem));
    $("records-copy-status").textContent = "";
    $("check").hidden = state === ACTIVE;
    $("domain-alias-form").hidden = state !== ACTIVE || !$("domain-alias-result").hidden;
    if (state !== ACTIVE) $("domain-alias-result").hidden = true;
    $("domain-link").href = domainLink(this.current.domain, this.current.token);
    $("domain-details").hidden = false;
  }

  // --- Check now

  clearCheck() {
    $("check-summary").textContent = "";
    $("check-problems").replaceChildren();
    $("check-result").classList.remove("has-problems");
  }

  tellCheck(summary, problems = []) {
    $("check-summary").textContent = summary;
    $("check-problems").replaceChildren(...problems.map((problem) => {
      const item = document.createElement("li");
      item.textContent = problem; // a sentence about a stranger's zone: text, never HTML
      return item;
    }));
    $("check-result").classList.toggle("has-problems", problems.length > 0);
  }

  async check() {
    if (!this.current) return;
    const { domain, token } = this.current;
    const button = $("check-button");
    button.disabled = true;
    button.textContent = "Checking…";
    this.clearCheck();
    try {
      await verifyDomain(this.api, domain, token);
      const view = await fetchDomain(this.api, domain, token)
        .catch(() => ({ ...this.current.view, status: ACTIVE }));
      this.show({ ...view, records: view.records || this.current.view.records });
      this.status(`Both records found: ${view.domain || domain} is active. Make aliases there below.`, { good: true });
      $("domain-alias-title").focus();
    } catch (problem) {
      this.tellCheckProblem(problem);
    } finally {
      button.disabled = false;
      button.textContent = "Check now";
    }
  }

  tellCheckProblem(problem) {
    if (!(problem instanceof ApiProblem)) {
      this.tellCheck("Something went wrong. Please try again.");
      return;
    }
    if (problem.error === "dns-not-ready") {
      const missing = problem.problems.length ? problem.problems : ["The records are not there yet."];
      this.tellCheck("Not yet. New records can take a few minutes to be seen. Still missing:", missing);
    } else if (problem.error === "dns-unavailable") {
      this.tellCheck(problem.message, problem.problems);
    } else if (problem.status === 404) {
      $("domain-details").hidden = true;
      this.status(problem.message, { gone: true });
    } else {
      this.tellCheck(problem.message);
    }
  }

  // --- aliases at the domain

  async createAlias(event) {
    event.preventDefault();
    if (!this.current) return;
    const order = this.aliasForm.read({ show: true });
    if (!order) return;
    const { domain, token } = this.current;
    const button = $("domain-alias-button");
    button.disabled = true;
    button.textContent = "Creating…";
    try {
      const alias = await createAlias(this.api, { ...order, domain, domainToken: token });
      remember({ target: order.target, days: order.days, uses: order.uses, replies: order.replies });
      $("domain-alias-address").textContent = alias.address;
      $("domain-alias-fate").textContent = fateInWords(order.days, order.uses);
      $("domain-alias-replies").textContent = repliesInWords(alias.replies);
      $("domain-alias-link").href = aliasLink(alias);
      $("domain-alias-form").hidden = true;
      $("domain-alias-result").hidden = false;
      $("domain-alias-result").querySelector(".copy-status").textContent = "";
      const count = Number(this.current.view.aliases);
      this.current.view.aliases = Number.isFinite(count) ? count + 1 : 1;
      $("domain-aliases").textContent = aliasCountInWords(this.current.view.aliases);
      $("domain-alias-result").focus();
    } catch (problem) {
      if (problem instanceof ApiProblem && problem.status === 404) {
        $("domain-details").hidden = true;
        this.status(problem.message, { gone: true });
        return;
      }
      this.aliasForm.showProblem(problem);
    } finally {
      button.disabled = false;
      button.textContent = "Create alias";
    }
  }

  // --- removal

  async remove() {
    if (!this.current) return;
    const { domain, token } = this.current;
    try {
      await removeDomain(this.api, domain, token);
      $("domain-details").hidden = true;
      this.current.view = null;
      this.status(`Removed. tempalias forgot ${domain} and erased every alias made there; ` +
        "mail to them is refused from now on.", { gone: true });
      $("domain-view").focus();
    } catch (problem) {
      this.status(problem instanceof ApiProblem ? problem.message : "Something went wrong.");
    }
  }
}
