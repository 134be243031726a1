// Builds the bookmarklet: a javascript: link carrying the user's settings (the domain too, when
// the page offered a choice of domains) and our public URL.
// It loads /bookmarklet.js once per page; where the page's Content-Security-Policy refuses that
// script, it opens the tempalias page in a small window with the same settings instead.

/** The page to fall back to: settings in the fragment, so they never reach a server log. */
export function fallbackUrl(base, { target, days, uses, domain, replies }) {
  const query = new URLSearchParams({ target, days: String(days), uses: uses === null ? "" : String(uses) });
  if (domain) query.set("domain", domain);
  if (replies) query.set("replies", "1");
  query.set("blocked", "1");
  return `${base}/#new?${query}`;
}

function loaderSource(options, fallback) {
  // Written for size and for old pages: no arrow functions, no globals but window.__tempalias.
  return `(function(w,d,o){if(w.__tempalias){w.__tempalias.run(o);return}` +
    `var s=d.createElement("script");s.src=o.base+"/bookmarklet.js";s.charset="utf-8";` +
    `s.onload=function(){s.remove();if(w.__tempalias){w.__tempalias.run(o)}};` +
    `s.onerror=function(){s.remove();var f=${JSON.stringify(fallback)};` +
    `if(!w.open(f,"tempalias","popup,width=540,height=760")){w.alert("This page does not allow the tempalias bookmarklet. Open "+o.base+" to make an alias.")}};` +
    `(d.head||d.documentElement).appendChild(s)})(window,document,${JSON.stringify(options)})`;
}

export function bookmarkletHref(base, { target, days, uses, domain = null, replies = false }) {
  const options = { base, target, days, uses };
  if (domain) options.domain = domain;
  if (replies) options.replies = true;
  return "javascript:" + encodeURIComponent(loaderSource(options, fallbackUrl(base, options)));
}
