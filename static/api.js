// The public REST API, as the page uses it. Every failure becomes an ApiProblem whose message
// is written for a person; the raw JSON never reaches the screen. A problem may carry `problems`,
// sentences the server wrote about someone's DNS records: text from strangers' zones, which the
// page only ever shows as text.

import { waitInWords } from "/static/words.js";

export class ApiProblem extends Error {
  constructor(message, { status = 0, field = null, retryAfter = null, error = null, problems = [] } = {}) {
    super(message);
    this.status = status;
    this.field = field;
    this.retryAfter = retryAfter;
    this.error = error;
    this.problems = problems;
  }
}

const NETWORK_TROUBLE = "tempalias could not be reached. Check your connection and try again.";

// What a 404 means depends on what was asked for: the API answers a wrong token as it answers
// something that does not exist, so neither tells a stranger more.
// Subjects: "alias", "domain" (a registration), "domain-alias" (an alias at a custom domain).
const DOMAIN_GONE = "This domain is not registered here (any more), or the link is incomplete. A registration " +
  "that is not verified within 7 days is erased, and so is one whose domain somebody else verified first.";
const NOT_FOUND = {
  alias: "This alias does not exist any more, or the link is incomplete.",
  domain: DOMAIN_GONE,
  "domain-alias": DOMAIN_GONE,
};
const TOO_MANY = {
  alias: "Many aliases were made from your network recently.",
  domain: "Many domains were registered from your network recently.",
  "domain-alias": "Many aliases were made from your network recently.",
};

const CONFLICT = {
  "dns-not-ready": "Your domain's records are not in place yet.",
  "domain-taken": "tempalias already serves this domain for someone. If it is yours, open its " +
    "management link; to register it anew, remove it there first.",
  "local-part-taken": "That name is, or was, an alias at this domain; choose another.",
  "domain-suspended": "Your domain's records are gone, so no aliases can be made there until they are back.",
};

function sentence(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) return "";
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : capital + ".";
}

function problemsOf(body) {
  return Array.isArray(body.problems) ? body.problems.map((problem) => sentence(problem)).filter(Boolean) : [];
}

async function problemFrom(answer, subject) {
  let body = {};
  try {
    body = await answer.json();
  } catch {
    body = {};
  }
  if (!body || typeof body !== "object") body = {};
  const header = Number.parseInt(answer.headers.get("Retry-After") || "", 10);
  const retryAfter = Number.isFinite(header) ? header : (Number.isFinite(body.retry_after) ? body.retry_after : null);
  const options = {
    status: answer.status, field: body.field || null, retryAfter, error: body.error || null,
    problems: problemsOf(body),
  };
  switch (answer.status) {
    case 422:
    case 400: {
      // "target is not ..." reads better as "This address is not ..." next to the field
      const text = String(body.description || "")
        .replace(/^target (is|must|may)\b/, "this address $1")
        .replace(/^local_part (is|must|may)\b/, "this name $1")
        .replace(/^replies (is|must|may)\b/, "the reply choice $1")
        .replace(/^domain (is|must|may)\b/, "this domain $1");
      return new ApiProblem(sentence(text) || "Please check what you entered.", options);
    }
    case 409:
      return new ApiProblem(CONFLICT[body.error] || sentence(body.description) || "That is already taken.", options);
    case 429: {
      const wait = retryAfter === null ? "a little while" : waitInWords(retryAfter);
      // The limit per target address concerns the address field; the one per network, the form.
      const perTarget = /target/.test(body.description || "");
      if (perTarget && !options.field) options.field = "target";
      const perDomain = subject === "domain-alias" && /domain/.test(body.description || "");
      const what = perTarget
        ? "Many aliases were made for this address recently."
        : (perDomain ? "This domain has made as many aliases as it may today." : TOO_MANY[subject]);
      return new ApiProblem(`${what} Please try again in ${wait}.`, options);
    }
    case 403:
      return new ApiProblem("Your network is on a spam block list, so tempalias cannot do this for it.", options);
    case 404:
      return new ApiProblem(NOT_FOUND[subject], options);
    case 503:
      if (body.error === "dns-unavailable") {
        return new ApiProblem("Your domain's DNS did not answer in time, so nothing is decided yet. " +
          "Try again in a minute.", options);
      }
      return new ApiProblem("tempalias is having a short break. Please try again in a moment.", options);
    default:
      return new ApiProblem(`Something went wrong on our side (error ${answer.status}). Please try again.`, options);
  }
}

async function call(base, path, { method = "GET", token = null, body = undefined, subject = "alias" } = {}) {
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
  if (!answer.ok) throw await problemFrom(answer, subject);
  return answer.status === 204 ? null : answer.json();
}

/**
 * @param order {target, days, uses, replies} and, when chosen, domain; at a custom domain also
 *   local_part (null: a random one) and the domain's token
 * @returns the new alias with its management token
 */
export function createAlias(base, { target, days, uses, replies = false, domain = null, localPart = null, domainToken = null }) {
  const body = { target, days, uses, replies: Boolean(replies) };
  if (domain) body.domain = domain;
  if (localPart) body.local_part = localPart;
  const subject = domainToken ? "domain-alias" : "alias";
  return call(base, "/api/v1/aliases", { method: "POST", body, token: domainToken, subject });
}

export function fetchAlias(base, id, token) {
  return call(base, `/api/v1/aliases/${encodeURIComponent(id)}`, { token });
}

export function revokeAlias(base, id, token) {
  return call(base, `/api/v1/aliases/${encodeURIComponent(id)}`, { method: "DELETE", token });
}

/** The operator's domains offered for new aliases, the default first. */
export async function offeredDomains(base) {
  const answer = await call(base, "/api/v1/domains");
  return Array.isArray(answer && answer.domains) ? answer.domains.filter((d) => typeof d === "string") : [];
}

/** @returns {domain, status: "pending", token, records: [{type, name, value}]} */
export function registerDomain(base, domain) {
  return call(base, "/api/v1/domains", { method: "POST", body: { domain }, subject: "domain" });
}

/** Resolves with {status: "active"}; a 409 dns-not-ready ApiProblem lists the `problems`. */
export function verifyDomain(base, domain, token) {
  return call(base, `/api/v1/domains/${encodeURIComponent(domain)}/verify`,
    { method: "POST", token, subject: "domain" });
}

export function fetchDomain(base, domain, token) {
  return call(base, `/api/v1/domains/${encodeURIComponent(domain)}`, { token, subject: "domain" });
}

export function removeDomain(base, domain, token) {
  return call(base, `/api/v1/domains/${encodeURIComponent(domain)}`, { method: "DELETE", token, subject: "domain" });
}
