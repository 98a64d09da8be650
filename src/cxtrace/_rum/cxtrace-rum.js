/* cxtrace real-user monitoring (design.md section 10). Served by cxtrace at /_cxtrace/rum.js.
   Measures this page load and sends ONE beacon to /_cxtrace/rum on the same origin: when the
   page is hidden or left, or 4 s after the load event, whichever comes first. Sends no URL
   (the server signed the page's path into data-cx) and never throws into the page. */
(function (w, d) {
  try {
    var s = d.currentScript, tok = s && s.getAttribute("data-cx"), P = w.performance;
    if (!tok || !P || !P.getEntriesByType || w.__cxtraceRum) return;
    w.__cxtraceRum = 1;
    var url = s.src.replace(/\.js([?#].*)?$/, ""), sent = 0, lcp = 0, inp = 0, cls = 0,
      win = 0, first = 0, last = 0, err = 0;
    var ms = function (x) { return Math.round(x); };
    var watch = function (type, fn, more) {
      try {
        var o = { type: type, buffered: true }, k;
        for (k in more) o[k] = more[k];
        new PerformanceObserver(function (list) {
          try { list.getEntries().forEach(fn); } catch (e) {}
        }).observe(o);
      } catch (e) {}
    };
    watch("largest-contentful-paint", function (e) { lcp = e.startTime; });
    /* INP, approximated: the longest interaction (event timing) seen until the beacon. */
    watch("event", function (e) {
      if (e.interactionId && e.duration > inp) inp = e.duration;
    }, { durationThreshold: 16 });
    watch("first-input", function (e) { if (e.duration > inp) inp = e.duration; });
    /* CLS: the largest session window (shifts < 1 s apart, window <= 5 s), as web-vitals. */
    watch("layout-shift", function (e) {
      if (e.hadRecentInput) return;
      if (win && e.startTime - last < 1000 && e.startTime - first < 5000) win += e.value;
      else { win = e.value; first = e.startTime; }
      last = e.startTime;
      if (win > cls) cls = win;
    });
    var count = function () { err++; };
    w.addEventListener("error", count);
    w.addEventListener("unhandledrejection", count);
    var send = function () {
      if (sent) return;
      sent = 1;
      try {
        var n = P.getEntriesByType("navigation")[0] || P.timing, t0 = n.navigationStart || 0;
        var at = function (x) { return x > 0 ? ms(x - t0) : undefined; };
        var b = JSON.stringify({
          v: 1, cx: tok, ttfb: at(n.responseStart) || 0, dcl: at(n.domContentLoadedEventEnd),
          load: at(n.loadEventEnd), lcp: lcp ? ms(lcp) : undefined, inp: inp ? ms(inp) : undefined,
          cls: Math.round(cls * 1e4) / 1e4, err: err, end: ms(P.now())
        });
        if (!(navigator.sendBeacon && navigator.sendBeacon(url, b)) && w.fetch)
          w.fetch(url, { method: "POST", body: b, keepalive: true, credentials: "same-origin",
            headers: { "Content-Type": "text/plain;charset=UTF-8" } })["catch"](function () {});
      } catch (e) {}
    };
    d.addEventListener("visibilitychange", function () {
      if (d.visibilityState === "hidden") send();
    });
    w.addEventListener("pagehide", send);
    var later = function () { setTimeout(send, 4000); };
    if (d.readyState === "complete") later(); else w.addEventListener("load", later);
  } catch (e) {}
})(window, document);
