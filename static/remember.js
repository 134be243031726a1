// The last settings, kept in this browser only (the original used a cookie; we send none):
// target, days, uses, whether replies go through the alias, and the domain picked for new aliases.

const KEY = "tempalias.settings.v1";

export function recall() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(KEY) || "null");
    return saved && typeof saved === "object" ? saved : {};
  } catch {
    return {}; // storage disabled or corrupt: start fresh
  }
}

/** Keeps the settings given; those not given (undefined) stay as they were. */
export function remember({ target, days, uses, replies, domain }) {
  const given = Object.fromEntries(Object.entries({ target, days, uses, replies, domain })
    .filter(([, value]) => value !== undefined));
  try {
    window.localStorage.setItem(KEY, JSON.stringify({ ...recall(), ...given }));
  } catch {
    // storage disabled (private mode, policy): the page works, it just forgets
  }
}
