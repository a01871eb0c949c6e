// The comparison page measures what the person at the screen waits for: from the click on
// Run (or a trial's start) to the first text in each pane, and to the complete answer. It
// reports those times back over the socket; the server words the figures and the verdict.
(function () {
  "use strict";

  var MODES = ["stream", "nostream"];
  var run = { id: null, trial: 0, t0: null, clickedAt: null, sides: {} };

  function pane(mode) { return document.querySelector('section.pane[data-mode="' + mode + '"]'); }

  // Presets fill the prompt; the two Run buttons choose how many trials.
  document.addEventListener("click", function (event) {
    var preset = event.target.closest("[data-prompt]");
    if (preset) {
      var box = document.getElementById("prompt");
      box.value = preset.dataset.prompt;
      box.focus();
    }
    var runButton = event.target.closest("#compare-form [data-trials]");
    if (runButton) runButton.form.elements.trials.value = runButton.dataset.trials;
  });

  // "Compare": streaming on vs off (one model) or any two setups (a model, streaming and
  // thinking per pane). Only the chosen pairing's fields are shown; the server reads only them.
  function showPairing() {
    var chooser = document.querySelector("#compare-form [data-pairing]");
    if (!chooser) return;
    document.querySelectorAll("#compare-form [data-pairing-only]").forEach(function (part) {
      part.hidden = part.dataset.pairingOnly !== chooser.value;
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches("#compare-form [data-pairing]")) showPairing();
  });
  function setUpForm() {
    var second = document.querySelector('#compare-form select[name="model_b"]');
    if (second && second.selectedIndex === 0 && second.options.length > 1) second.selectedIndex = 1;
    showPairing();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUpForm);
  else setUpForm();

  // The click: the clock starts just before the request leaves the page.
  document.addEventListener("htmx:wsConfigSend", function (event) {
    if (event.target.id === "compare-form") run.clickedAt = performance.now();
  });

  function startTrial(template) {
    run.id = template.dataset.run;
    run.trial = parseInt(template.dataset.trial, 10);
    // The first trial is timed from the click, later ones from when they start.
    run.t0 = run.trial === 1 && run.clickedAt !== null ? run.clickedAt : performance.now();
    run.clickedAt = null;
    MODES.forEach(function (mode) {
      run.sides[mode] = {
        answer: template.dataset[mode + "Answer"], first: null, done: null, reported: false,
      };
    });
  }

  // Thinking counts: it is the first thing the reader sees of a thinking model's answer.
  function hasText(article) {
    var parts = article.querySelectorAll(".message__tail, .message__body.markdown, .thinking__body");
    for (var i = 0; i < parts.length; i++) if (parts[i].textContent.trim()) return true;
    return false;
  }

  function report(mode, side) {
    var form = document.getElementById("compare-timings");
    if (!form || side.reported) return;
    side.reported = true;
    form.elements.run.value = run.id;
    form.elements.trial.value = run.trial;
    form.elements.mode.value = mode;
    form.elements.first_text_ms.value = side.first === null ? "" : (side.first - run.t0).toFixed(1);
    form.elements.complete_ms.value = (side.done - run.t0).toFixed(1);
    form.requestSubmit();
  }

  function observe() {
    var now = performance.now();
    MODES.forEach(function (mode) {
      var section = pane(mode);
      if (!section) return;
      var answers = section.querySelectorAll('article[data-role="assistant"]');
      if (answers.length) section.dataset.status = answers[answers.length - 1].dataset.status;
      var side = run.sides[mode];  // only trials this page saw start are timed
      var article = side && document.getElementById("message-" + side.answer);
      if (!article) return;
      var status = article.dataset.status;
      if (side.first === null && hasText(article)) side.first = now;
      if (side.done === null && status !== "streaming") {
        side.done = now;
        report(mode, side);
      }
    });
  }

  document.addEventListener("htmx:wsAfterMessage", function () {
    var template = document.getElementById("compare-trial");
    if (template && template.dataset.trial && template.dataset.seen !== "1") {
      template.dataset.seen = "1";
      startTrial(template);
    }
    var current = document.getElementById("compare-run");
    if (current && current.dataset.runUrl && location.pathname !== current.dataset.runUrl) {
      history.replaceState(null, "", current.dataset.runUrl);  // a reload shows this run
    }
    observe();
  });

  // Each pane's clock runs from the click until its answer is complete.
  setInterval(function () {
    if (run.t0 === null) return;
    var now = performance.now();
    MODES.forEach(function (mode) {
      var side = run.sides[mode];
      var section = pane(mode);
      var timer = section && section.querySelector("[data-pane-timer]");
      if (!side || !timer) return;
      var end = side.done === null ? now : side.done;
      timer.textContent = ((end - run.t0) / 1000).toFixed(1) + " " + (timer.dataset.unit || "s");
    });
  }, 100);
})();
