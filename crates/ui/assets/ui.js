// Berth dashboard: live updates over SSE. Loaded as a file (the pages allow
// no inline script). Everything from the server goes in as text, never HTML.
"use strict";

(function () {
  const page = document.body.dataset.page;

  function setState(el, state, text) {
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  // Every [data-server] row on the page takes the figures of /ui/events.
  function liveServers() {
    const rows = new Map();
    document.querySelectorAll("tr[data-server]").forEach((tr) => rows.set(tr.dataset.server, tr));
    if (rows.size === 0 && page !== "servers") return;
    const live = document.getElementById("live");
    const updated = document.getElementById("updated");
    const events = new EventSource("/ui/events");
    let reloading = false;
    events.addEventListener("open", () => setState(live, "open", "connected"));
    events.addEventListener("error", () => {
      if (events.readyState === EventSource.CLOSED) {
        setState(live, "closed", "disconnected: reload the page (or log in again)");
      } else {
        setState(live, "connecting", "reconnecting…");
      }
    });
    events.addEventListener("servers", (e) => {
      const snapshot = JSON.parse(e.data);
      const names = new Set();
      for (const server of snapshot.servers) {
        names.add(server.name);
        const tr = rows.get(server.name);
        if (!tr) continue;
        tr.dataset.status = server.status;
        for (const td of tr.querySelectorAll("td[data-field]")) {
          const text = server.cells[td.dataset.field];
          if (text === undefined || td.textContent === text) continue;
          td.textContent = text;
          td.classList.remove("changed");
          void td.offsetWidth; // restart the highlight
          td.classList.add("changed");
        }
      }
      if (updated) updated.textContent = snapshot.at;
      // The overview follows servers added or removed by a reload.
      const same = names.size === rows.size && [...rows.keys()].every((n) => names.has(n));
      if (page === "servers" && !same && !reloading) {
        reloading = true;
        setTimeout(() => location.reload(), 500);
      }
    });
  }

  // A server page's log: new lines appended as they come.
  function liveLog() {
    const pre = document.getElementById("log");
    if (!pre) return;
    const state = document.getElementById("log-state");
    const MAX_LINES = 2000;
    const url = "/ui/servers/" + encodeURIComponent(pre.dataset.server) +
      "/log?after=" + encodeURIComponent(pre.dataset.after || "0");
    const events = new EventSource(url);
    events.addEventListener("open", () => setState(state, "open", "live"));
    events.addEventListener("error", () => {
      setState(state, events.readyState === EventSource.CLOSED ? "closed" : "connecting",
        events.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…");
    });
    events.addEventListener("line", (e) => {
      const line = JSON.parse(e.data);
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      pre.appendChild(document.createTextNode(line.text + "\n"));
      pre.dataset.after = String(line.seq);
      while (pre.childNodes.length > MAX_LINES) pre.removeChild(pre.firstChild);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    });
  }

  liveServers();
  liveLog();
})();
