// Streamside page behaviour. htmx and its websocket extension do the talking; this file only
// wires the keyboard, the live "waiting…" timers and scrolling. No inline script (CSP).
(function () {
  "use strict";

  // The socket's state, for the page (a "reconnecting" notice) and for tests to wait on.
  document.addEventListener("htmx:wsOpen", function (event) {
    var reconnected = event.target.dataset.connected === "false";
    event.target.dataset.connected = "true";
    // After a reconnect, ask about the answers still shown as streaming: one may have ended
    // while the old socket was closing (its final frame lost with it).
    if (!reconnected) return;
    var ids = [];
    event.target.querySelectorAll('article[data-role="assistant"][data-status="streaming"]')
      .forEach(function (article) { ids.push(article.id.replace("message-", "")); });
    if (ids.length) {
      event.detail.socketWrapper.send(JSON.stringify({ action: "sync", answers: ids }), event.target);
    }
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

  // Esc stops the answer streaming, wherever the focus is, unless Esc already means something
  // there: an IME composing, a search box (Esc clears it), a select, an open dialog, anything
  // marked data-own-escape, or a handler that took it first (the edit box's, which cancels the
  // edit): this one listens on window, so every handler on the document has run before it.
  window.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
    var target = event.target;
    var own = "[data-own-escape], input[type=search], select, dialog[open]";
    if (target.closest && target.closest(own)) return;
    var stop = document.querySelector("#composer-actions .btn--stop");
    if (!stop) return;
    event.preventDefault();
    stop.click();
  });

  // The new-chat shortcut is declared on its button (aria-keyshortcuts="Alt+N"). event.code
  // too: on a Mac, Alt+N types a dead key.
  document.addEventListener("keydown", function (event) {
    if (!event.altKey || event.ctrlKey || event.metaKey || event.shiftKey || event.isComposing) return;
    if (String(event.key).toLowerCase() !== "n" && event.code !== "KeyN") return;
    var button = document.querySelector('button[aria-keyshortcuts="Alt+N"]');
    if (!button) return;
    event.preventDefault();
    button.click();
  });

  // The skip link moves the focus, not only the view, to the message box.
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a.skip-link");
    var target = link && document.getElementById(link.hash.slice(1));
    if (!target) return;
    event.preventDefault();
    target.focus();
  });

  // Narrow screens: the sidebar's "Conversations" button folds it (the CSS reads aria-expanded).
  document.addEventListener("click", function (event) {
    var toggle = event.target.closest && event.target.closest(".sidebar__toggle");
    if (toggle) toggle.setAttribute("aria-expanded", String(toggle.getAttribute("aria-expanded") !== "true"));
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
      // The words come from the page, in its language ("waiting… 2.4 s", "等待中… 2.4 秒").
      el.textContent = (el.dataset.label || "") + " " + ((now - el._t0) / 1000).toFixed(1) + " " + (el.dataset.unit || "s");
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

  // Follow the stream unless the reader has scrolled up; then, once something new arrives,
  // "Jump to latest" offers the way back. The chat log scrolls with the page, or by itself if
  // a layout makes it a scroll container: whichever scrolls is followed.
  var NEAR_END_PX = 80;
  var stick = true;

  function scroller() {
    for (var el = document.querySelector(".chat__live [role=log]"); el && el !== document.body; el = el.parentElement) {
      var overflow = getComputedStyle(el).overflowY;
      if ((overflow === "auto" || overflow === "scroll") && el.scrollHeight > el.clientHeight) return el;
    }
    return document.scrollingElement;
  }
  function awayFromEnd(box) { return box.scrollHeight - box.scrollTop - box.clientHeight >= NEAR_END_PX; }
  function showJump(show) {
    var button = document.getElementById("jump-latest");
    if (button) button.hidden = !show;
  }
  function toEnd() {
    var box = scroller();
    box.scrollTop = box.scrollHeight;
    stick = true;
    showJump(false);
  }

  document.addEventListener("scroll", function (event) {
    var box = scroller();
    var page = box === document.scrollingElement;
    if (page ? event.target !== document : event.target !== box) return;  // a code block, say
    stick = !awayFromEnd(box);
    if (stick) showJump(false);
  }, { capture: true, passive: true });
  // While the reader is moving the view (a wheel or trackpad going up, a finger on the screen,
  // Page Up) new text must not pull it back; the scroll events then say where it was left.
  var readerMovedAt = -Infinity;
  var touching = false;
  function readerMoved() { readerMovedAt = performance.now(); }
  function readerBusy() { return touching || performance.now() - readerMovedAt < 300; }
  document.addEventListener("wheel", function (event) {
    if (event.deltaY < 0) readerMoved();
  }, { passive: true });
  document.addEventListener("touchstart", function () { touching = true; readerMoved(); }, { passive: true });
  ["touchend", "touchcancel"].forEach(function (type) {
    document.addEventListener(type, function () { touching = false; readerMoved(); }, { passive: true });
  });
  document.addEventListener("keydown", function (event) {
    var editing = event.target.closest && event.target.closest("input, textarea, select, [contenteditable]");
    if (!editing && ["PageUp", "ArrowUp", "Home"].indexOf(event.key) !== -1) readerMoved();
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    if (stick && !readerBusy()) toEnd();
    else if (awayFromEnd(scroller())) showJump(true);
  });
  document.addEventListener("click", function (event) {
    if (!(event.target.closest && event.target.closest("#jump-latest"))) return;
    toEnd();
    // From the keyboard (no pointer: detail 0) the focus goes on to the message box rather
    // than being lost with the button.
    var box = document.getElementById("message");
    if (event.detail === 0 && box) box.focus({ preventScroll: true });
  });
  // A conversation opens at its latest message.
  document.addEventListener("DOMContentLoaded", function () {
    if (!location.hash && document.querySelector(".chat__live [role=log] article")) toEnd();
  });
})();
