// The page: the create form, the result, the management view. Views are chosen by the URL
// fragment, so a management token (#manage/<id>/<token>) never travels to the server.

import { settings } from "/config.js";
import { ApiProblem, createAlias, fetchAlias, revokeAlias } from "/static/api.js";
import { bookmarkletHref } from "/static/bookmarklet-link.js";
import { recall, remember } from "/static/remember.js";
import { dateInWords, fateInWords, usesLeftInWords } from "/static/words.js";

const API = ""; // same origin as the page
const $ = (id) => document.getElementById(id);
const form = $("create-form");
const fields = { target: $("target"), days: $("days"), uses: $("uses") };

// --- settings the server enforces, shown where the user needs them

for (const element of document.querySelectorAll("[data-setting]")) {
  element.textContent = String(settings[element.dataset.setting]);
}
fields.days.max = String(settings.maxDays);
fields.uses.max = String(settings.maxUses);

// --- field errors: next to the field, announced by its aria-live region

function showFieldError(name, message) {
  const input = fields[name];
  $(`${name}-error`).textContent = message;
  input.setAttribute("aria-invalid", "true");
}

function clearErrors() {
  for (const name of Object.keys(fields)) {
    $(`${name}-error`).textContent = "";
    fields[name].removeAttribute("aria-invalid");
  }
  $("form-error").textContent = "";
}

function wholeNumber(text) {
  return /^\s*\d+\s*$/.test(text) ? Number.parseInt(text, 10) : NaN;
}

/** The order as typed, or null after showing what is wrong with it. */
function readOrder({ show }) {
  const problems = {};
  const target = fields.target.value.trim();
  if (!target) problems.target = "Enter the address the alias should forward to.";
  else if (fields.target.validity.typeMismatch || !/^[^\s@]+@[^\s@]+$/.test(target)) {
    problems.target = "That does not look like an email address.";
  } else {
    const domain = target.split("@").pop().toLowerCase();
    if (domain === settings.domain || domain.endsWith("." + settings.domain)) {
      problems.target = "That is a tempalias address; enter your real one.";
    }
  }
  const days = wholeNumber(fields.days.value);
  if (!(days >= 1 && days <= settings.maxDays)) {
    problems.days = `Choose a whole number of days from 1 to ${settings.maxDays}.`;
  }
  const usesText = fields.uses.value.trim();
  const uses = usesText === "" ? null : wholeNumber(usesText);
  if (uses !== null && !(uses >= 1 && uses <= settings.maxUses)) {
    problems.uses = `Choose from 1 to ${settings.maxUses} messages, or leave it empty.`;
  }
  if (show) {
    clearErrors();
    for (const [name, message] of Object.entries(problems)) showFieldError(name, message);
    const first = Object.keys(fields).find((name) => problems[name]);
    if (first) fields[first].focus();
  }
  return Object.keys(problems).length ? null : { target, days, uses };
}

function updateSummary() {
  const days = wholeNumber(fields.days.value);
  const usesText = fields.uses.value.trim();
  const uses = usesText === "" ? null : wholeNumber(usesText);
  const valid = days >= 1 && days <= settings.maxDays && (uses === null || (uses >= 1 && uses <= settings.maxUses));
  $("order-summary").textContent = valid ? fateInWords(days, uses) : "";
}

// --- create

function showProblem(problem) {
  const name = problem.field && fields[problem.field] ? problem.field : null;
  if (name) {
    showFieldError(name, problem.message);
    fields[name].focus();
  } else {
    $("form-error").textContent = problem.message;
  }
}

function manageUrl(alias, token) {
  return `${settings.publicUrl}/#manage/${encodeURIComponent(alias.id)}/${encodeURIComponent(token)}`;
}

function showResult(alias, order) {
  $("result-address").textContent = alias.address;
  $("result-fate").textContent = fateInWords(order.days, order.uses);
  $("manage-link").href = manageUrl(alias, alias.token);
  $("bookmarklet-link").href = bookmarkletHref(settings.publicUrl, order);
  $("copy-status").textContent = "";
  $("create").hidden = true;
  $("result").hidden = false;
  $("result").focus();
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const order = readOrder({ show: true });
  if (!order) return;
  const button = $("create-button");
  button.disabled = true;
  button.textContent = "Creating…";
  try {
    const alias = await createAlias(API, order);
    remember(order);
    showResult(alias, order);
  } catch (problem) {
    showProblem(problem instanceof ApiProblem ? problem : new ApiProblem("Something went wrong. Please try again."));
  } finally {
    button.disabled = false;
    button.textContent = "Create alias";
  }
});

for (const input of Object.values(fields)) {
  input.addEventListener("input", () => {
    if (input.getAttribute("aria-invalid")) {
      input.removeAttribute("aria-invalid");
      $(`${input.name}-error`).textContent = "";
    }
    updateSummary();
  });
}

$("bookmarklet-link").addEventListener("click", (event) => {
  event.preventDefault(); // it works from the bookmarks bar, on other pages, not here
  $("bookmarklet-hint").textContent = "Drag this button to your bookmarks bar, then click it there on a sign-up page.";
});

$("another-button").addEventListener("click", () => {
  $("result").hidden = true;
  $("create").hidden = false;
  fields.target.focus();
});

// --- copy to clipboard (the async API where the page is a secure context, else a selection)

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const scratch = document.createElement("textarea");
  scratch.value = text;
  scratch.setAttribute("readonly", "");
  scratch.style.position = "fixed";
  scratch.style.opacity = "0";
  document.body.append(scratch);
  scratch.select();
  const copied = document.execCommand("copy");
  scratch.remove();
  if (!copied) throw new Error("copy refused");
}

for (const button of document.querySelectorAll("[data-copy-from]")) {
  button.addEventListener("click", async () => {
    const text = $(button.dataset.copyFrom).textContent;
    const status = button.closest(".card").querySelector(".copy-status") || $("copy-status");
    try {
      await copyText(text);
      button.textContent = "Copied";
      status.textContent = `${text} is on your clipboard.`;
    } catch {
      status.textContent = "Your browser did not allow copying; select the address and copy it yourself.";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
}

// --- manage: #manage/<id>/<token>

let managed = null;

function showManageStatus(text, gone) {
  const status = $("manage-status");
  status.textContent = text;
  status.classList.toggle("is-gone", Boolean(gone));
}

async function openManage(id, token) {
  managed = { id, token };
  $("create").hidden = true;
  $("result").hidden = true;
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

// --- views by fragment

function fillForm(values) {
  fields.target.value = values.target ?? "";
  fields.days.value = values.days ?? settings.defaultDays;
  fields.uses.value = values.uses ?? "";
  updateSummary();
}

function route() {
  const hash = window.location.hash;
  const manage = /^#manage\/([^/]+)\/([^/]+)$/.exec(hash);
  if (manage) {
    openManage(decodeURIComponent(manage[1]), decodeURIComponent(manage[2]));
    return;
  }
  if (hash === "#about" || hash === "#privacy" || hash === "#main") return; // in-page anchors
  $("manage").hidden = true;
  if (hash.startsWith("#new?")) {
    const query = new URLSearchParams(hash.slice(5));
    fillForm({ target: query.get("target"), days: query.get("days"), uses: query.get("uses") });
    $("fallback-notice").hidden = query.get("blocked") !== "1";
    $("result").hidden = true;
    $("create").hidden = false;
    return;
  }
  if ($("result").hidden) $("create").hidden = false;
}

fillForm(recall());
window.addEventListener("hashchange", route);
route();
document.documentElement.dataset.ready = "true";
