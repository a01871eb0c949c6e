// Replays a saved comparison run at its recorded pace: both panes' clocks run from the press
// of Replay, the streamed pane's text grows frame by frame at the recorded offsets, the other
// says "waiting…" until its whole answer lands at its recorded time. No socket, no model
// call: the frames come from the page (#replay-data, made by chat/compare/replay.py), and
// each pane ends with the run's own finished article. On the presentation view
// (.compare--present) it also reads the keys: R replays, Enter or N runs again, Esc leaves.
(function () {
  "use strict";

  var MODES = ["stream", "nostream"];
  var BETWEEN_TRIALS_MS = 800;
  var playing = null;  // {trial, t0, panes: {mode: state}, timer}

  function control() { return document.querySelector("[data-replay-control]"); }
  function container() { return document.getElementById("compare-run"); }
  function pane(mode) { return document.querySelector('#compare-run section.pane[data-mode="' + mode + '"]'); }

  function data() {
    var block = document.getElementById("replay-data");
    return block ? JSON.parse(block.textContent) : null;
  }

  function clock(ms) {
    var box = control();
    return (Math.max(ms, 0) / 1000).toFixed(1) + " " + ((box && box.dataset.unit) || "s");
  }

  function setTimer(mode, ms) {
    var section = pane(mode);
    var timer = section && section.querySelector("[data-pane-timer]");
    if (timer) timer.textContent = clock(ms);
  }

  // An answer as the live page shows it while it streams: a waiting line, then the text.
  function emptyArticle(answer) {
    var article = document.createElement("article");
    article.className = "message message--assistant";
    article.id = "message-" + answer;
    article.dataset.role = "assistant";
    article.dataset.status = "streaming";
    article.dataset.replayed = "";
    article.setAttribute("aria-busy", "true");
    var waiting = document.createElement("p");
    waiting.className = "waiting";
    waiting.dataset.replayWait = "";
    var tail = document.createElement("div");
    tail.className = "message__body message__body--plain message__tail";
    article.append(waiting, tail);
    return article;
  }

  function addReasoning(state, chunk) {
    var body = state.article.querySelector(".thinking__body");
    if (!body) {
      var details = document.createElement("details");
      details.className = "thinking";
      details.open = true;
      var summary = document.createElement("summary");
      summary.textContent = control().dataset.thinking || "Thinking…";
      body = document.createElement("div");
      body.className = "thinking__body";
      details.append(summary, body);
      state.article.prepend(details);
    }
    body.append(chunk);
  }

  function show(state, frame) {
    var text = frame[1], reasoning = frame[2];
    if (reasoning) addReasoning(state, reasoning);
    if (text) state.article.querySelector(".message__tail").append(text);
    if (text || reasoning) {
      var waiting = state.article.querySelector("[data-replay-wait]");
      if (waiting) waiting.remove();
    }
  }

  function finish(mode, state) {
    while (state.next < state.plan.frames.length) show(state, state.plan.frames[state.next++]);
    var holder = document.createElement("template");
    holder.innerHTML = state.plan.article;
    var article = holder.content.firstElementChild;
    if (article) {
      state.article.replaceWith(article);
      state.article = article;
      if (window.htmx) window.htmx.process(article);
    }
    state.done = true;
    var section = pane(mode);
    if (section) section.dataset.status = state.article.dataset.status || "complete";
    setTimer(mode, state.plan.complete_ms);
  }

  function tick() {
    if (!playing) return;
    var elapsed = performance.now() - playing.t0;
    var due = Infinity;
    MODES.forEach(function (mode) {
      var state = playing.panes[mode];
      if (state.done) return;
      var frames = state.plan.frames;
      while (state.next < frames.length && frames[state.next][0] <= elapsed) show(state, frames[state.next++]);
      if (elapsed >= state.plan.complete_ms) { finish(mode, state); return; }
      setTimer(mode, elapsed);
      var waiting = state.article.querySelector("[data-replay-wait]");
      if (waiting) waiting.textContent = (control().dataset.waiting || "waiting…") + " " + clock(elapsed);
      var next = state.next < frames.length ? frames[state.next][0] : Infinity;
      due = Math.min(due, next, state.plan.complete_ms);
    });
    if (due === Infinity) {
      var trials = playing.replay.trials;
      if (playing.trial + 1 < trials.length) {
        var following = playing.trial + 1;
        playing.timer = setTimeout(function () { playTrial(following); }, BETWEEN_TRIALS_MS);
      } else {
        end();
      }
      return;
    }
    // Wake at the next frame, and at least every 50 ms to move the clocks.
    playing.timer = setTimeout(tick, Math.max(0, Math.min(due - elapsed, 50)));
  }

  function playTrial(index) {
    var trial = playing.replay.trials[index];
    playing.trial = index;
    playing.panes = {};
    MODES.forEach(function (mode) {
      var plan = trial.panes[mode];
      var section = pane(mode);
      var article = emptyArticle(plan.answer);
      var log = section && section.querySelector(".pane__log");
      if (log) log.append(article);
      if (section) section.dataset.status = "streaming";
      playing.panes[mode] = { plan: plan, next: 0, article: article, done: false };
    });
    playing.t0 = performance.now();
    tick();
  }

  function end() {
    var run = container();
    if (run) delete run.dataset.replay;
    playing = null;
  }

  function replay() {
    var recorded = data();
    var run = container();
    if (!recorded || !run) return;
    if (String(recorded.run) !== run.dataset.run) {
      // A run made on this page since it loaded: its own page has its replay.
      if (run.dataset.runUrl) location.assign(run.dataset.runUrl + (presenting() ? "present/" : ""));
      return;
    }
    if (playing) clearTimeout(playing.timer);
    playing = { replay: recorded, trial: 0, t0: 0, panes: {}, timer: null };
    run.dataset.replay = "";
    var label = control().querySelector("[data-replay-label]");
    if (label) label.hidden = false;
    MODES.forEach(function (mode) {
      var section = pane(mode);
      var log = section && section.querySelector(".pane__log");
      if (log) log.replaceChildren();
      setTimer(mode, 0);
    });
    playTrial(0);
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-replay-button]")) replay();
  });

  // --- The presentation view ------------------------------------------------------------

  function presenting() { return document.querySelector(".compare--present") !== null; }

  function typing(target) {
    return target.closest && target.closest("input, textarea, select, [contenteditable], dialog, [data-own-escape]");
  }

  document.addEventListener("keydown", function (event) {
    if (!presenting() || event.defaultPrevented || event.isComposing) return;
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var key = event.key;
    if (key === "r" || key === "R") {
      event.preventDefault();
      replay();
    } else if (key === "Enter" || key === "n" || key === "N") {
      if (key === "Enter" && event.target.closest("button, a, summary")) return;  // its own Enter
      var again = document.querySelector("form[data-present-rerun]");
      if (!again) return;
      event.preventDefault();
      if (playing) { clearTimeout(playing.timer); end(); }
      again.requestSubmit();
    } else if (key === "Escape") {
      var main = document.querySelector(".compare--present");
      var run = container();
      var back = main.dataset.backUrl || (run && run.dataset.runUrl);
      if (!main.hasAttribute("data-shared") && run && run.dataset.runUrl) back = run.dataset.runUrl;
      if (back) { event.preventDefault(); location.assign(back); }
    }
  });

  // A run started here gets its own address; keep it the presentation's (compare.js, which
  // listens first, has just made it the run page's).
  document.addEventListener("htmx:wsAfterMessage", function () {
    var run = container();
    if (!presenting() || !run || !run.dataset.runUrl) return;
    var wanted = run.dataset.runUrl + "present/";
    if (location.pathname !== wanted) history.replaceState(null, "", wanted);
  });
})();
