// Refreshes the cockpit's views every few seconds without reloading the page. No library:
// the charts are rendered by the server; a trace id is a link to its spans (/trace/<id>).
(function () {
  "use strict";
  var REFRESH_MS = 5000;
  var content = document.getElementById("content");
  var updated = document.getElementById("updated");
  var windowLabel = document.body.getAttribute("data-window") || "15m";

  function stamp(text) {
    if (updated) updated.textContent = text;
  }

  function refresh() {
    if (document.hidden) return;
    var params = new URLSearchParams(location.search);
    params.set("window", params.get("window") || windowLabel);
    params.set("fragment", "1");
    var url = "/?" + params.toString();
    fetch(url, { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html !== content.innerHTML) content.innerHTML = html;
        stamp("updated " + new Date().toLocaleTimeString());
      })
      .catch(function () {
        stamp("cockpit not reachable; retrying");
      });
  }

  content.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("[data-trace-id]") : null;
    if (!target || !navigator.clipboard) return;
    navigator.clipboard.writeText(target.getAttribute("data-trace-id")).then(function () {
      target.classList.add("copied");
      setTimeout(function () { target.classList.remove("copied"); }, 1200);
    });
  });

  stamp("updated " + new Date().toLocaleTimeString());
  setInterval(refresh, REFRESH_MS);
  document.addEventListener("visibilitychange", refresh);
})();
