// Asks /api/state every few seconds; when an alert was added, swaps in the list's rows as
// the server renders them for the same filters (/fragments/opportunities). No framework.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) return;
  var seen = live.dataset.alerts + "|" + live.dataset.newest;
  var every = parseInt(live.dataset.pollMs, 10) || 5000;
  function refresh() {
    fetch("/fragments/opportunities" + window.location.search)
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var rows = document.getElementById("rows");
        var before = {};
        rows.querySelectorAll("tr[data-alert-id]").forEach(function (tr) { before[tr.dataset.alertId] = 1; });
        rows.innerHTML = html;
        rows.querySelectorAll("tr[data-alert-id]").forEach(function (tr) {
          if (!before[tr.dataset.alertId]) tr.classList.add("new");
        });
        document.getElementById("open-count").textContent = rows.querySelectorAll("tr[data-alert-id]").length;
      });
  }
  function poll() {
    fetch("/api/state")
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (state) {
        var now = state.alerts + "|" + (state.newest_detected_at || "");
        live.classList.remove("offline");
        if (now !== seen) { seen = now; refresh(); }
      })
      .catch(function () { live.classList.add("offline"); })
      .finally(function () { window.setTimeout(poll, every); });
  }
  window.setTimeout(poll, every);
})();
