// The last settings, kept in this browser only (the original used a cookie; we send none).

const KEY = "tempalias.settings.v1";

export function recall() {
  try {
    const saved = JSON.parse(window.localStorage.getItem(KEY) || "null");
    return saved && typeof saved === "object" ? saved : {};
  } catch {
    return {}; // storage disabled or corrupt: start fresh
  }
}

export function remember({ target, days, uses }) {
  try {
    window.localStorage.setItem(KEY, JSON.stringify({ target, days, uses }));
  } catch {
    // storage disabled (private mode, policy): the page works, it just forgets
  }
}
