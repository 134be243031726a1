// The public REST API of the one server this extension is made for (config.js), called from the
// extension's own pages and service worker only, never from a web page: the host permission lets
// them call it without CORS, and what it answers (the token, the target) stays in the extension.
// Every failure becomes an AliasProblem whose message is short enough to stand next to a button.

import { settings } from "./config.js";

const SERVER = settings.publicUrl;
const HOST = new URL(SERVER).host;

export class AliasProblem extends Error {
  /** @param status the HTTP status (0: no answer); fixInOptions: the options page can mend it */
  constructor(message, { status = 0, fixInOptions = false } = {}) {
    super(message);
    this.status = status;
    this.fixInOptions = fixInOptions;
  }
}

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

function waitInWords(seconds) {
  if (seconds < 60) return plural(Math.max(1, seconds), "second", "seconds");
  if (seconds < 3600) return plural(Math.ceil(seconds / 60), "minute", "minutes");
  if (seconds < 86400) return plural(Math.ceil(seconds / 3600), "hour", "hours");
  return plural(Math.ceil(seconds / 86400), "day", "days");
}

function sentence(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) return "";
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : capital + ".";
}

/** The server's refusal in words: its own description where it gives the reason. */
function problemOf(status, body) {
  const description = typeof body.description === "string" ? body.description : "";
  switch (status) {
    case 429: // the server's reason, its wait in words: "...; try again in 12 hours."
      return new AliasProblem(sentence(description.replace(/try again in (\d+) s$/,
        (_, seconds) => `try again in ${waitInWords(Number(seconds))}`)) ||
        "Too many new aliases just now; try again later.", { status });
    case 403:
      return new AliasProblem("Your network is on a spam block list" +
        (description ? ` (${description})` : "") + ", so tempalias makes no aliases for it.", { status });
    case 422:
      return new AliasProblem(`tempalias refused this extension's settings: ${sentence(description)} ` +
        "Change them in the options.", { status, fixInOptions: true });
    case 404:
      return new AliasProblem("This alias does not exist any more.", { status });
    case 503:
      return new AliasProblem("tempalias is having a short break; try again in a moment.", { status });
    default:
      return new AliasProblem(`tempalias answered with error ${status}.`, { status });
  }
}

async function call(path, { method = "GET", token = null, body = undefined } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(SERVER + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
    });
  } catch {
    throw new AliasProblem(`tempalias (${HOST}) could not be reached. Is the server up, and are you online?`);
  }
  if (!answer.ok) {
    let refusal = {};
    try {
      refusal = (await answer.json()) || {};
    } catch {
      refusal = {};
    }
    throw problemOf(answer.status, refusal);
  }
  return answer.status === 204 ? null : answer.json();
}

/** A new alias with the extension's defaults; answers it with its management token. */
export function createAlias({ target, days, uses, domain = null }) {
  const order = { target, days, uses };
  if (domain) order.domain = domain;
  return call("/api/v1/aliases", { method: "POST", body: order });
}

/** The owner's view: address, expires_at, uses_left, active... */
export function fetchAlias(id, token) {
  return call(`/api/v1/aliases/${encodeURIComponent(id)}`, { token });
}

export function revokeAlias(id, token) {
  return call(`/api/v1/aliases/${encodeURIComponent(id)}`, { method: "DELETE", token });
}

/** The server's domains for new aliases, its default first. */
export async function offeredDomains() {
  const answer = await call("/api/v1/domains");
  return Array.isArray(answer && answer.domains) ? answer.domains.filter((d) => typeof d === "string") : [];
}
