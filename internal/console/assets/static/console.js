// msisync console: auto-refresh of the overview, the login link's token,
// and bulk replay/purge of dead letters with progress. No framework.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf || "";

  // A console URL printed at start-up carries the token in the fragment
  // (#token=…), which browsers never send to the server: fill the form,
  // drop the fragment from the address bar and history, and log in.
  const form = document.getElementById("login-form");
  const fromHash = () => {
    if (!form || !location.hash.startsWith("#token=")) return;
    const tok = decodeURIComponent(location.hash.slice(7));
    history.replaceState(null, "", location.pathname + location.search);
    // A wrong token comes back as this page without the fragment: no loop.
    form.elements.token.value = tok;
    form.submit();
  };
  fromHash();
  window.addEventListener("hashchange", fromHash);

  // The overview reloads its own content every few seconds.
  const ov = document.getElementById("overview");
  if (ov) {
    const every = (parseInt(ov.dataset.refresh, 10) || 5) * 1000;
    const tick = async () => {
      try {
        const r = await fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
        if (r.redirected && r.url.includes("/console/login")) { location.reload(); return; }
        if (r.ok) {
          const doc = new DOMParser().parseFromString(await r.text(), "text/html");
          const fresh = doc.getElementById("overview");
          if (fresh) document.getElementById("overview").replaceWith(fresh);
        }
      } catch (e) { /* offline for a moment: try again next tick */ }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }

  // Dead letters: select, confirm, then replay or purge in chunks.
  const picks = () => Array.from(document.querySelectorAll("input.pick"));
  const chosen = () => picks().filter((c) => c.checked).map((c) => c.value);
  const bulk = document.querySelector(".bulk");
  const update = () => {
    if (!bulk || bulk.dataset.single) return;
    const n = chosen().length;
    const cnt = document.getElementById("selected-count");
    if (cnt) cnt.textContent = n + " selected";
    bulk.querySelectorAll("button[data-bulk]").forEach((b) => { b.disabled = n === 0; });
  };
  const all = document.getElementById("select-all");
  if (all) all.addEventListener("change", () => { picks().forEach((c) => { c.checked = all.checked; }); update(); });
  picks().forEach((c) => c.addEventListener("change", update));
  update();

  document.querySelectorAll("button[data-bulk]").forEach((btn) => {
    btn.addEventListener("click", async () => {
      const op = btn.dataset.bulk;
      const ids = bulk.dataset.single ? [bulk.dataset.single] : chosen();
      if (ids.length === 0) return;
      const what = ids.length === 1 ? "this dead letter" : ids.length + " dead letters";
      const msg = op === "purge" ? "Delete " + what + " for good? This cannot be undone."
                                 : "Put " + what + " back on the queue to sync again?";
      if (!window.confirm(msg)) return;
      const bar = document.getElementById("bulk-progress");
      const status = document.getElementById("bulk-status");
      bulk.querySelectorAll("button").forEach((b) => { b.disabled = true; });
      bar.hidden = false; bar.max = ids.length; bar.value = 0;
      let done = 0, failed = "";
      for (let i = 0; i < ids.length && !failed; i += 20) {
        const chunk = ids.slice(i, i + 20);
        try {
          const r = await fetch("/console/api/deadletters/" + op, {
            method: "POST", credentials: "same-origin",
            headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
            body: JSON.stringify({ ids: chunk }),
          });
          const body = await r.json();
          if (!r.ok) { failed = body.detail || r.statusText; break; }
          done += body[op === "purge" ? "purged" : "replayed"] || 0;
        } catch (e) { failed = String(e); }
        bar.value = Math.min(ids.length, i + chunk.length);
        status.textContent = (op === "purge" ? "Purged " : "Replayed ") + done + " of " + ids.length;
      }
      if (failed) { status.textContent += " — stopped: " + failed; return; }
      status.textContent = (op === "purge" ? "Purged " : "Replayed ") + done + " of " + ids.length + ".";
      setTimeout(() => { location.href = bulk.dataset.single ? "/console/deadletters" : location.href; }, 800);
    });
  });
})();
