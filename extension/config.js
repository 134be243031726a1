// The server this extension talks to and what it enforces. `tempalias extension` writes this file
// for the server it runs on (tempalias/webextension.py); this copy is for `make run`'s server, so
// that extension/ loads unpacked as it is while you work on it.
export const settings = Object.freeze({
  "publicUrl": "http://127.0.0.1:8080",
  "domain": "tempalias.localhost",
  "maxDays": 60,
  "maxUses": 100,
  "defaultDays": 7
});
