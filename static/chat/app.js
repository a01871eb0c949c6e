// Streamside page behaviour. htmx and its websocket extension do the talking; this file only
// wires the keyboard, the live "waiting…" timers and scrolling. No inline script (CSP).
(function () {
  "use strict";

  // The socket's state, for the page (a "reconnecting" notice) and for tests to wait on.
  document.addEventListener("htmx:wsOpen", function (event) {
    event.target.dataset.connected = "true";
  });
  document.addEventListener("htmx:wsClose", function (event) {
    event.target.dataset.connected = "false";
  });

  // Enter sends, Shift+Enter makes a new line.
  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (box.id !== "message" || event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    if (box.value.trim() && box.form) box.form.requestSubmit();
  });

  // The server marks the turn frame that this page sent: only then is the box cleared, so a
  // refused message (say, while an answer streams) is not lost.
  document.addEventListener("htmx:wsAfterMessage", function (event) {
    if (String(event.detail.message).indexOf("data-sent") === -1) return;
    var form = document.getElementById("composer");
    if (form) form.reset();
  });

  // "waiting… 2.4 s" (and "Thinking… 1.2 s"): counts from what the server said at render time.
  function tick() {
    var now = performance.now();
    document.querySelectorAll("[data-timer]").forEach(function (el) {
      if (el._t0 === undefined) el._t0 = now - parseFloat(el.dataset.elapsed || "0") * 1000;
      el.textContent = (el.dataset.label || "waiting…") + " " + ((now - el._t0) / 1000).toFixed(1) + " s";
    });
  }

  // The Thinking block folds away once the answer begins, unless the reader opened or closed it.
  document.addEventListener("click", function (event) {
    var summary = event.target.closest && event.target.closest("details.thinking > summary");
    if (summary) delete summary.parentElement.dataset.autoClose;
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    document.querySelectorAll("details.thinking[data-auto-close]").forEach(function (box) {
      if (!box.querySelector("[data-thought-ms]")) return;
      box.open = false;
      delete box.dataset.autoClose;
    });
  });
  setInterval(tick, 100);

  // Follow the stream unless the reader has scrolled up.
  var stick = true;
  document.addEventListener("scroll", function () {
    var root = document.scrollingElement;
    stick = root.scrollHeight - root.scrollTop - root.clientHeight < 80;
  }, { passive: true });
  document.addEventListener("htmx:wsAfterMessage", function () {
    if (stick) window.scrollTo(0, document.scrollingElement.scrollHeight);
  });
})();
