// Copy buttons on code blocks and finished answers. The server renders the buttons and their
// labels (translated, in aria-label and data-copied-label; CSS shows aria-label), so this file
// holds no user-visible text. One listener on the document: buttons swapped in later by htmx
// (live blocks, final frames, snapshots) work without being wired up.
(function () {
  "use strict";

  var SHOW_COPIED_MS = 1500;

  // What a button copies: a code block's code as written, or an answer's markdown source.
  function sourceOf(button) {
    if (button.dataset.copy === "code") {
      var code = button.parentElement.querySelector("pre code");
      return code ? code.textContent.replace(/\n$/, "") : "";
    }
    var template = button.parentElement.querySelector("template[data-answer-source]");
    return template ? template.content.textContent : "";
  }

  // What the reader can see of it, selected when nothing else works.
  function shownPart(button) {
    if (button.dataset.copy === "code") return button.parentElement.querySelector("pre code");
    var article = button.closest("article");
    return article && article.querySelector(".markdown");
  }

  function confirmCopied(button) {
    if (!button.dataset.label) button.dataset.label = button.getAttribute("aria-label");
    button.setAttribute("aria-label", button.dataset.copiedLabel);
    button.classList.add("copy--done");
    clearTimeout(button._copiedTimer);
    button._copiedTimer = setTimeout(function () {
      button.setAttribute("aria-label", button.dataset.label);
      button.classList.remove("copy--done");
    }, SHOW_COPIED_MS);
  }

  // Without the clipboard API (a page served over plain HTTP, say): the older copy command,
  // and if the browser refuses that too, the text is left selected for Ctrl+C.
  function copyByHand(button, text) {
    var box = document.createElement("textarea");
    box.value = text;
    box.readOnly = true;
    box.className = "visually-hidden";
    document.body.appendChild(box);
    box.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    box.remove();
    button.focus();
    if (copied) {
      confirmCopied(button);
      return;
    }
    var shown = shownPart(button);
    if (!shown) return;
    var range = document.createRange();
    range.selectNodeContents(shown);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) return;
    var text = sourceOf(button);
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { confirmCopied(button); },
        function () { copyByHand(button, text); }
      );
    } else {
      copyByHand(button, text);
    }
  });
})();
