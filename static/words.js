// Plain words for numbers and dates: what will happen to an alias, how long to wait.

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

/** "after 3 days or 5 messages, whichever comes first, this alias is erased" */
export function fateInWords(days, uses) {
  const time = plural(days, "day", "days");
  if (uses === null || uses === undefined) {
    return `After ${time}, this alias is erased. Until then it forwards every message.`;
  }
  return `After ${time} or ${plural(uses, "message", "messages")}, whichever comes first, this alias is erased.`;
}

export function waitInWords(seconds) {
  if (seconds < 60) return plural(Math.max(1, Math.ceil(seconds)), "second", "seconds");
  if (seconds < 3600) return plural(Math.ceil(seconds / 60), "minute", "minutes");
  if (seconds < 86400) return plural(Math.ceil(seconds / 3600), "hour", "hours");
  return plural(Math.ceil(seconds / 86400), "day", "days");
}

export function dateInWords(iso) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return iso;
  return moment.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function usesLeftInWords(usesLeft) {
  return usesLeft === null || usesLeft === undefined ? "No limit" : String(usesLeft);
}

/** "Replies through this alias: on" (or off), as the alias says. */
export function repliesInWords(replies) {
  return `Replies through this alias: ${replies === true ? "on" : "off"}`;
}
