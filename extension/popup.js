// The toolbar popup: the aliases this browser made, each as the server sees it now (asked with its
// own token, from here: never from a page), with copy and revoke. An alias the server no longer
// knows (it ran out, or was revoked elsewhere) can be removed from the list.

import { ext } from "./browser.js";
import { AliasProblem, fetchAlias, revokeAlias } from "./api.js";
import { settings } from "./config.js";
import { forgetAlias, readOptions, rememberedAliases } from "./store.js";

const $ = (id) => document.getElementById(id);
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const GONE = 404;

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

/** "3 days left", under a day "5 hours left": what is left until the alias ends at the latest. */
function timeLeftInWords(expiresAt) {
  const left = Date.parse(expiresAt) - Date.now();
  if (!(left > 0)) return "ended";
  if (left > DAY_MS) return `${plural(Math.ceil(left / DAY_MS), "day", "days")} left`;
  return `${plural(Math.ceil(left / HOUR_MS), "hour", "hours")} left`;
}

function usesLeftInWords(alias) {
  if (alias.uses_left === null || alias.uses_left === undefined) return "no message limit";
  if (!alias.active) return "used up";
  return `${plural(alias.uses_left, "message", "messages")} left`;
}

function problemText(problem) {
  return problem instanceof AliasProblem ? problem.message : "Something went wrong; try again.";
}

/** One alias in the list: shown at once from what is stored, then as the server answers. */
class AliasRow {
  constructor(record) {
    this.record = record;
    this.item = $("alias-row").content.firstElementChild.cloneNode(true);
    this.item.dataset.aliasId = record.id;
    this.part = (name) => this.item.querySelector(`.${name}`);
    this.part("address").textContent = record.address;
    this.part("confirm-address").textContent = record.address;
    this.part("site").textContent = record.site ? `made on ${record.site}` : "made on an unnamed page";
    this.part("days").textContent = "…";
    this.part("uses").textContent = "…";
    this.part("copy").addEventListener("click", () => this.copy());
    this.part("revoke").addEventListener("click", () => this.confirm(true));
    this.part("revoke-no").addEventListener("click", () => this.confirm(false));
    this.part("revoke-yes").addEventListener("click", () => this.revoke());
    this.part("forget").addEventListener("click", () => this.forget(""));
  }

  say(text) {
    this.part("row-status").textContent = text;
  }

  async refresh() {
    try {
      const alias = await fetchAlias(this.record.id, this.record.token);
      this.part("address").textContent = alias.address;
      this.part("days").textContent = timeLeftInWords(alias.expires_at);
      this.part("uses").textContent = usesLeftInWords(alias);
    } catch (problem) {
      if (problem instanceof AliasProblem && problem.status === GONE) {
        this.item.classList.add("gone");
        this.part("days").textContent = "ended or revoked";
        this.part("uses").textContent = "takes no more mail";
        this.part("revoke").hidden = true;
        this.part("forget").hidden = false;
      } else {
        this.part("days").textContent = "not known now";
        this.part("uses").textContent = "—";
        this.say(problemText(problem));
      }
    }
  }

  async copy() {
    const address = this.part("address").textContent;
    try {
      await navigator.clipboard.writeText(address);
      this.say(`${address} is on your clipboard.`);
    } catch {
      this.say("Your browser did not allow copying; select the address and copy it yourself.");
    }
  }

  confirm(open) {
    this.part("confirm").hidden = !open;
    this.part("revoke").hidden = open;
    (open ? this.part("revoke-no") : this.part("revoke")).focus();
  }

  async revoke() {
    try {
      await revokeAlias(this.record.id, this.record.token);
    } catch (problem) {
      if (!(problem instanceof AliasProblem && problem.status === GONE)) {
        this.say(problemText(problem));
        return;
      }
    }
    await this.forget(`Revoked ${this.record.address}: mail to it is refused from now on.`);
  }

  async forget(farewell) {
    await forgetAlias(this.record.id);
    this.item.remove();
    $("status").textContent = farewell;
    $("empty").hidden = $("aliases").children.length > 0;
  }
}

async function load() {
  $("server").textContent = new URL(settings.publicUrl).host;
  $("options-button").addEventListener("click", () => ext.runtime.openOptionsPage());
  const [options, records] = await Promise.all([readOptions(), rememberedAliases()]);
  $("no-target").hidden = Boolean(options.target);
  $("empty").hidden = records.length > 0;
  const rows = records.map((record) => new AliasRow(record));
  $("aliases").replaceChildren(...rows.map((row) => row.item));
  await Promise.all(rows.map((row) => row.refresh()));
  document.documentElement.dataset.ready = "true";
}

load();
