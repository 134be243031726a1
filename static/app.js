// The page: the create form, the result, the management views. Views are chosen by the URL
// fragment, so a management token (#manage/<id>/<token>, #domain/<domain>/<token>) never
// travels to the server.

import { settings } from "/config.js";
import { ApiProblem, createAlias, fetchAlias, offeredDomains, revokeAlias } from "/static/api.js";
import { bookmarkletHref } from "/static/bookmarklet-link.js";
import { installCopyButtons } from "/static/copy.js";
import { DomainViews } from "/static/domain.js";
import { OrderForm } from "/static/order.js";
import { recall, remember } from "/static/remember.js";
import { dateInWords, fateInWords, repliesInWords, usesLeftInWords } from "/static/words.js";

const API = ""; // same origin as the page
const $ = (id) => document.getElementById(id);
const picker = $("alias-domain");

// --- settings the server enforces, shown where the user needs them

for (const element of document.querySelectorAll("[data-setting]")) {
  element.textContent = String(settings[element.dataset.setting]);
}

// --- the operator's domains: a picker when there is a choice

let offered = [settings.domain];
let wanted = recall().domain || null; // the domain to pick once the list is in
const domainsLoaded = offeredDomains(API).then((domains) => {
  if (domains.length) offered = domains;
  if (offered.length > 1) {
    picker.replaceChildren(...offered.map((domain) => new Option(domain, domain)));
    pickDomain(wanted);
    $("field-domain").hidden = false;
    $("about-domains").textContent = offered.join(", ");
  }
}).catch(() => {
  // a server without the list (or a hiccup): new aliases go to its first domain, no picker
});

function pickDomain(domain) {
  wanted = domain || null;
  if (offered.length > 1) picker.value = offered.includes(wanted) ? wanted : offered[0];
}

/** The domain chosen, or null where there is no choice (the server's first is the default). */
function chosenDomain() {
  return $("field-domain").hidden ? null : picker.value;
}

// --- create

const createForm = new OrderForm({
  fields: { target: $("target"), domain: picker, days: $("days"), uses: $("uses"), replies: $("replies") },
  formError: $("form-error"),
  summary: $("order-summary"),
  ownDomains: () => offered,
});

function manageUrl(alias, token) {
  return `${settings.publicUrl}/#manage/${encodeURIComponent(alias.id)}/${encodeURIComponent(token)}`;
}

function showResult(alias, order) {
  $("result-address").textContent = alias.address;
  $("result-fate").textContent = fateInWords(order.days, order.uses);
  $("result-replies").textContent = repliesInWords(alias.replies);
  $("manage-link").href = manageUrl(alias, alias.token);
  $("bookmarklet-link").href = bookmarkletHref(settings.publicUrl, order);
  $("copy-status").textContent = "";
  $("create").hidden = true;
  $("result").hidden = false;
  $("result").focus();
}

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const typed = createForm.read({ show: true });
  if (!typed) return;
  const button = $("create-button");
  button.disabled = true;
  button.textContent = "Creating…";
  try {
    await domainsLoaded; // so that a remembered domain is picked before it is sent
    const order = { ...typed, domain: chosenDomain() };
    const alias = await createAlias(API, order);
    remember({ ...order, domain: order.domain ?? undefined }); // no choice: keep the last one
    showResult(alias, order);
  } catch (problem) {
    createForm.showProblem(problem);
  } finally {
    button.disabled = false;
    button.textContent = "Create alias";
  }
});

$("bookmarklet-link").addEventListener("click", (event) => {
  event.preventDefault(); // it works from the bookmarks bar, on other pages, not here
  $("bookmarklet-hint").textContent = "Drag this button to your bookmarks bar, then click it there on a sign-up page.";
});

$("another-button").addEventListener("click", () => {
  $("result").hidden = true;
  $("create").hidden = false;
  $("target").focus();
});

installCopyButtons();

// --- manage: #manage/<id>/<token>

let managed = null;

function showManageStatus(text, gone) {
  const status = $("manage-status");
  status.textContent = text;
  status.classList.toggle("is-gone", Boolean(gone));
}

async function openManage(id, token) {
  managed = { id, token };
  $("manage").hidden = false;
  $("manage-details").hidden = true;
  $("revoke-confirm").hidden = true;
  showManageStatus("Loading…");
  try {
    const alias = await fetchAlias(API, id, token);
    $("manage-address").textContent = alias.address;
    $("revoke-address").textContent = alias.address;
    $("manage-target").textContent = alias.target;
    $("manage-uses").textContent = usesLeftInWords(alias.uses_left);
    $("manage-delivered").textContent = String(alias.delivered);
    $("manage-expires").textContent = dateInWords(alias.expires_at);
    $("manage-replies").textContent = alias.replies === true ? "on" : "off";
    showManageStatus(alias.active ? "" : "This alias has used up its messages and takes no more mail.", !alias.active);
    $("manage-details").hidden = false;
  } catch (problem) {
    showManageStatus(problem instanceof ApiProblem ? problem.message : "Something went wrong.", true);
  }
  $("manage").focus();
}

$("revoke-button").addEventListener("click", () => {
  $("revoke-confirm").hidden = false;
  $("revoke-no").focus();
});
$("revoke-no").addEventListener("click", () => {
  $("revoke-confirm").hidden = true;
  $("revoke-button").focus();
});
$("revoke-yes").addEventListener("click", async () => {
  if (!managed) return;
  try {
    await revokeAlias(API, managed.id, managed.token);
    const address = $("manage-address").textContent;
    $("manage-details").hidden = true;
    showManageStatus(`Revoked. Mail to ${address} is refused from now on, and its record is erased.`, true);
  } catch (problem) {
    showManageStatus(problem instanceof ApiProblem ? problem.message : "Something went wrong.", false);
  }
});

// --- your own domain: #your-domain, #domain/<domain>/<token>

const domains = new DomainViews({ api: API, ownDomains: () => offered });

// --- views by fragment

const VIEWS = ["create", "result", "manage", "own", "domain-view"];

function show(...names) {
  for (const name of VIEWS) $(name).hidden = !names.includes(name);
}

function route() {
  const hash = window.location.hash;
  if (hash === "#about" || hash === "#privacy" || hash === "#main") return; // in-page anchors
  const manage = /^#manage\/([^/]+)\/([^/]+)$/.exec(hash);
  if (manage) {
    show("manage");
    openManage(decodeURIComponent(manage[1]), decodeURIComponent(manage[2]));
    return;
  }
  const domain = /^#domain\/([^/]+)\/([^/]+)$/.exec(hash);
  if (domain) {
    show("domain-view");
    domains.open(decodeURIComponent(domain[1]), decodeURIComponent(domain[2]));
    return;
  }
  if (hash === "#your-domain") {
    show("own");
    domains.start();
    return;
  }
  if (hash.startsWith("#new?")) {
    const query = new URLSearchParams(hash.slice(5));
    createForm.fill({
      target: query.get("target"), days: query.get("days"), uses: query.get("uses"),
      replies: query.get("replies") === "1",
    });
    if (query.get("domain")) pickDomain(query.get("domain"));
    $("fallback-notice").hidden = query.get("blocked") !== "1";
    show("create");
    return;
  }
  show($("result").hidden ? "create" : "result");
}

createForm.fill(recall());
window.addEventListener("hashchange", route);
route();
document.documentElement.dataset.ready = "true";
