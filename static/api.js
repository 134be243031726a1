// The public REST API, as the page uses it. Every failure becomes an ApiProblem whose message
// is written for a person; the raw JSON never reaches the screen.

import { waitInWords } from "/static/words.js";

export class ApiProblem extends Error {
  constructor(message, { status = 0, field = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

const NETWORK_TROUBLE = "tempalias could not be reached. Check your connection and try again.";

function sentence(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) return "";
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : capital + ".";
}

async function problemFrom(answer) {
  let body = {};
  try {
    body = await answer.json();
  } catch {
    body = {};
  }
  const header = Number.parseInt(answer.headers.get("Retry-After") || "", 10);
  const retryAfter = Number.isFinite(header) ? header : (Number.isFinite(body.retry_after) ? body.retry_after : null);
  const options = { status: answer.status, field: body.field || null, retryAfter };
  switch (answer.status) {
    case 422:
    case 400: {
      // "target is not ..." reads better as "This address is not ..." next to the field
      const text = String(body.description || "").replace(/^target (is|must|may)\b/, "this address $1");
      return new ApiProblem(sentence(text) || "Please check what you entered.", options);
    }
    case 429: {
      const wait = retryAfter === null ? "a little while" : waitInWords(retryAfter);
      // The limit per target address concerns the address field; the one per network, the form.
      const perTarget = /target/.test(body.description || "");
      if (perTarget && !options.field) options.field = "target";
      const what = perTarget
        ? "Many aliases were made for this address recently."
        : "Many aliases were made from your network recently.";
      return new ApiProblem(`${what} Please try again in ${wait}.`, options);
    }
    case 403:
      return new ApiProblem("Your network is on a spam block list, so tempalias cannot make aliases for it.", options);
    case 404:
      return new ApiProblem("This alias does not exist any more, or the link is incomplete.", options);
    case 503:
      return new ApiProblem("tempalias is having a short break. Please try again in a moment.", options);
    default:
      return new ApiProblem(`Something went wrong on our side (error ${answer.status}). Please try again.`, options);
  }
}

async function call(base, path, { method = "GET", token = null, body = undefined } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(base + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ApiProblem(NETWORK_TROUBLE);
  }
  if (!answer.ok) throw await problemFrom(answer);
  return answer.status === 204 ? null : answer.json();
}

/** @returns the new alias with its management token */
export function createAlias(base, { target, days, uses }) {
  return call(base, "/api/v1/aliases", { method: "POST", body: { target, days, uses } });
}

export function fetchAlias(base, id, token) {
  return call(base, `/api/v1/aliases/${encodeURIComponent(id)}`, { token });
}

export function revokeAlias(base, id, token) {
  return call(base, `/api/v1/aliases/${encodeURIComponent(id)}`, { method: "DELETE", token });
}
