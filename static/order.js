// An order form: the fields of a new alias (target, days, uses, whether its owner may reply
// through it; at a custom domain also the local part), checked as the server will check them, with each error next to its field and
// announced by that field's aria-live region (its id is the input's id + "-error").

import { settings } from "/config.js";
import { ApiProblem } from "/static/api.js";
import { fateInWords } from "/static/words.js";

// RFC 5321 dot-atom, as the server takes a local part (it lower-cases it too)
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const MAX_LOCAL_PART = 64;

export function wholeNumber(text) {
  return /^\s*\d+\s*$/.test(text) ? Number.parseInt(text, 10) : NaN;
}

function ours(domain, ownDomains) {
  return ownDomains.some((own) => domain === own || domain.endsWith("." + own));
}

export class OrderForm {
  /**
   * @param fields the inputs by the API's field names:
   *   {target, days, uses[, replies (a checkbox)][, local_part][, domain]}
   * @param formError where a problem that concerns no field is shown
   * @param summary where the order's fate is said as it is typed (optional)
   * @param ownDomains () => the domains a target may not be at (ours: forwarding there loops)
   */
  constructor({ fields, formError, summary = null, ownDomains }) {
    this.fields = fields;
    this.formError = formError;
    this.summary = summary;
    this.ownDomains = ownDomains;
    for (const input of Object.values(fields)) {
      input.addEventListener("input", () => {
        if (input.getAttribute("aria-invalid")) {
          input.removeAttribute("aria-invalid");
          this.errorOf(input).textContent = "";
        }
        this.updateSummary();
      });
    }
    fields.days.max = String(settings.maxDays);
    fields.uses.max = String(settings.maxUses);
  }

  errorOf(input) {
    return document.getElementById(`${input.id}-error`);
  }

  showFieldError(name, message) {
    const input = this.fields[name];
    this.errorOf(input).textContent = message;
    input.setAttribute("aria-invalid", "true");
  }

  clearErrors() {
    for (const input of Object.values(this.fields)) {
      this.errorOf(input).textContent = "";
      input.removeAttribute("aria-invalid");
    }
    this.formError.textContent = "";
  }

  fill(values) {
    this.fields.target.value = values.target ?? "";
    this.fields.days.value = values.days ?? settings.defaultDays;
    this.fields.uses.value = values.uses ?? "";
    if (this.fields.replies) this.fields.replies.checked = values.replies === true;
    this.updateSummary();
  }

  /** The days and uses as typed, when both are within the limits. */
  limits() {
    const days = wholeNumber(this.fields.days.value);
    const usesText = this.fields.uses.value.trim();
    const uses = usesText === "" ? null : wholeNumber(usesText);
    return { days, uses };
  }

  updateSummary() {
    if (!this.summary) return;
    const { days, uses } = this.limits();
    const valid = days >= 1 && days <= settings.maxDays && (uses === null || (uses >= 1 && uses <= settings.maxUses));
    this.summary.textContent = valid ? fateInWords(days, uses) : "";
  }

  /** The order as typed, or null after showing what is wrong with it. */
  read({ show }) {
    const problems = {};
    const order = {};
    const local = this.fields.local_part;
    if (local) {
      order.localPart = local.value.trim().toLowerCase() || null;
      if (order.localPart !== null && (order.localPart.length > MAX_LOCAL_PART || !LOCAL_PART.test(order.localPart))) {
        problems.local_part = `Use up to ${MAX_LOCAL_PART} letters, digits and signs such as - _ +, ` +
          "with dots only between them and no spaces; or leave it empty for a random name.";
      }
    }
    order.target = this.fields.target.value.trim();
    if (!order.target) problems.target = "Enter the address the alias should forward to.";
    else if (this.fields.target.validity.typeMismatch || !/^[^\s@]+@[^\s@]+$/.test(order.target)) {
      problems.target = "That does not look like an email address.";
    } else if (ours(order.target.split("@").pop().toLowerCase(), this.ownDomains())) {
      problems.target = "That is a tempalias address; enter your real one.";
    }
    const { days, uses } = this.limits();
    Object.assign(order, { days, uses, replies: Boolean(this.fields.replies && this.fields.replies.checked) });
    if (!(days >= 1 && days <= settings.maxDays)) {
      problems.days = `Choose a whole number of days from 1 to ${settings.maxDays}.`;
    }
    if (uses !== null && !(uses >= 1 && uses <= settings.maxUses)) {
      problems.uses = `Choose from 1 to ${settings.maxUses} messages, or leave it empty.`;
    }
    if (show) {
      this.clearErrors();
      for (const [name, message] of Object.entries(problems)) this.showFieldError(name, message);
      const first = Object.keys(this.fields).find((name) => problems[name]);
      if (first) this.fields[first].focus();
    }
    return Object.keys(problems).length ? null : order;
  }

  /** The server's refusal, next to its field when it names one of ours, else under the form. */
  showProblem(problem) {
    const known = problem instanceof ApiProblem ? problem : new ApiProblem("Something went wrong. Please try again.");
    const name = known.field && this.fields[known.field] ? known.field : null;
    if (name) {
      this.showFieldError(name, known.message);
      this.fields[name].focus();
    } else {
      this.formError.textContent = known.message;
    }
  }
}
