// Conversation work: editing a sent message in place (Enter sends, Esc cancels), sending the
// landing page's first message, and the Undo offer's timeout after a delete. htmx sends the
// edit over the socket (the form's ws-send); every label comes from the server's HTML, none
// from here. No inline script (CSP).
(function () {
  "use strict";

  function editParts(article) {
    return {
      form: article.querySelector("form.edit"),
      button: article.querySelector("[data-edit]"),
    };
  }

  function openEdit(article) {
    var parts = editParts(article);
    if (!parts.form || !parts.button) return;
    article.dataset.editing = "true";
    parts.form.hidden = false;
    parts.button.setAttribute("aria-expanded", "true");
    var box = parts.form.querySelector("textarea");
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }

  // Cancelling puts the text back as it was sent and the focus back on Edit.
  function closeEdit(article) {
    var parts = editParts(article);
    if (!parts.form || !parts.button) return;
    delete article.dataset.editing;
    parts.form.hidden = true;
    var box = parts.form.querySelector("textarea");
    box.value = box.defaultValue;
    parts.button.setAttribute("aria-expanded", "false");
    parts.button.focus();
  }

  document.addEventListener("click", function (event) {
    var control = event.target.closest && event.target.closest("[data-edit], [data-edit-cancel]");
    var article = control && control.closest("article");
    if (!article) return;
    if (control.hasAttribute("data-edit")) openEdit(article);
    else closeEdit(article);
  });

  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (!box.classList || !box.classList.contains("edit__text")) return;
    if (event.key === "Escape") {
      event.preventDefault();
      closeEdit(box.closest("article"));
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (box.value.trim() && box.form) box.form.requestSubmit();
    }
  });

  // The first message typed on the landing page (chat/conversations/landing.py): the server
  // renders it once into the composer's data-pending-message, and it is sent as if typed here
  // when the socket first opens. The attribute goes as it is used, so a reconnect cannot send
  // it again; if the server refuses it, it stays in the box with the alert.
  document.addEventListener("htmx:wsOpen", function () {
    var form = document.getElementById("composer");
    var box = form && form.querySelector("textarea[name=message]");
    if (!box || !form.hasAttribute("data-pending-message")) return;
    box.value = form.dataset.pendingMessage;
    form.removeAttribute("data-pending-message");
    form.requestSubmit();
  });

  // "Deleted “…”. Undo" goes away after a while, though not while the reader is on it.
  function dismissLater(toast) {
    var wait = parseInt(toast.dataset.dismissAfterMs || "10000", 10);
    setTimeout(function check() {
      if (toast.contains(document.activeElement) || toast.matches(":hover")) {
        setTimeout(check, 1000);
        return;
      }
      toast.remove();
    }, wait);
  }
  document.querySelectorAll("[data-dismiss-after-ms]").forEach(dismissLater);
})();
