// The options page: the target, days, uses and domain new aliases are made with, checked as the
// server will check them (its limits come with config.js), each error next to its field, and kept
// in the extension's storage (store.js).

import { offeredDomains } from "./api.js";
import { settings } from "./config.js";
import { readOptions, saveOptions } from "./store.js";

const $ = (id) => document.getElementById(id);
const FIELDS = ["target", "domain", "days", "uses"];
let ownDomains = [settings.domain];

function wholeNumber(text) {
  return /^\s*\d+\s*$/.test(text) ? Number.parseInt(text, 10) : NaN;
}

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

function showError(name, message) {
  $(`${name}-error`).textContent = message;
  $(name).setAttribute("aria-invalid", "true");
}

function clearErrors() {
  for (const name of FIELDS) {
    $(`${name}-error`).textContent = "";
    $(name).removeAttribute("aria-invalid");
  }
}

/** The options as typed, or null after showing what is wrong with them. */
function read() {
  const problems = {};
  const target = $("target").value.trim();
  const domainOf = (address) => address.split("@").pop().toLowerCase();
  if (!target) problems.target = "Enter the address new aliases should forward to.";
  else if ($("target").validity.typeMismatch || !/^[^\s@]+@[^\s@]+$/.test(target)) {
    problems.target = "That does not look like an email address.";
  } else if (ownDomains.some((own) => domainOf(target) === own || domainOf(target).endsWith("." + own))) {
    problems.target = "That is a tempalias address; enter your real one.";
  }
  const days = wholeNumber($("days").value);
  if (!(days >= 1 && days <= settings.maxDays)) {
    problems.days = `Choose a whole number of days from 1 to ${settings.maxDays}.`;
  }
  const usesText = $("uses").value.trim();
  const uses = usesText === "" ? null : wholeNumber(usesText);
  if (uses !== null && !(uses >= 1 && uses <= settings.maxUses)) {
    problems.uses = `Choose from 1 to ${settings.maxUses} messages, or leave it empty.`;
  }
  clearErrors();
  for (const [name, message] of Object.entries(problems)) showError(name, message);
  const first = FIELDS.find((name) => problems[name]);
  if (first) {
    $(first).focus();
    return null;
  }
  return { target, days, uses, domain: $("field-domain").hidden ? null : $("domain").value };
}

function fateInWords({ target, days, uses }) {
  const limits = uses === null ? plural(days, "day", "days")
    : `${plural(days, "day", "days")} or ${plural(uses, "message", "messages")}, whichever comes first`;
  return `Saved. New aliases forward to ${target}, for ${limits}.`;
}

async function showDomains(chosen) {
  try {
    const offered = await offeredDomains();
    if (offered.length) ownDomains = offered;
  } catch {
    return; // the server's first domain, without a choice; saving still works
  }
  if (ownDomains.length < 2) return;
  $("domain").replaceChildren(...ownDomains.map((domain) => new Option(domain, domain)));
  $("domain").value = ownDomains.includes(chosen) ? chosen : ownDomains[0];
  $("field-domain").hidden = false;
}

async function load() {
  $("server").textContent = new URL(settings.publicUrl).host;
  $("max-days").textContent = String(settings.maxDays);
  $("max-uses").textContent = String(settings.maxUses);
  $("days").max = String(settings.maxDays);
  $("uses").max = String(settings.maxUses);
  const options = await readOptions();
  $("target").value = options.target;
  $("days").value = String(options.days);
  $("uses").value = options.uses === null ? "" : String(options.uses);
  await showDomains(options.domain);
  $("options-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("status").textContent = "";
    const chosen = read();
    if (!chosen) return;
    await saveOptions(chosen);
    $("status").textContent = fateInWords(chosen);
  });
  document.documentElement.dataset.ready = "true";
}

load();
