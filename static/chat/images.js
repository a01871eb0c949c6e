// Images for a message: the Attach button, paste and drop on the composer upload each file
// (POST /images/upload/); the server answers with a chip (chat/_image_chip.html) whose hidden
// input sends the image's id with the message, or with the usual alert (the text stays typed).
// The same for the chat's composer (sent over the socket) and the landing's (posted with the
// first message to /c/new/): a page has one or the other, with the same element ids.
(function () {
  "use strict";

  var COMPOSERS = "#composer, #landing";

  function input() { return document.getElementById("image-file"); }
  function chips() { return document.getElementById("composer-images"); }

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || "";
    } catch (error) {
      return "";
    }
  }

  function alertsBox() {
    return document.getElementById("alerts") || document.getElementById("landing-alerts");
  }

  function showAlert(html) {
    var alerts = alertsBox();
    if (alerts) alerts.innerHTML = html;
  }

  function failed() {
    var alerts = alertsBox();
    if (!alerts) return;
    var p = document.createElement("p");
    p.className = "alert";
    p.setAttribute("role", "alert");
    p.textContent = (input() && input().dataset.failed) || "Upload failed.";
    alerts.replaceChildren(p);
  }

  function upload(file) {
    var box = input();
    var list = chips();
    if (!box || !list) return;
    var body = new FormData();
    body.append("image", file, file.name || "pasted-image");
    body.append("waiting", String(list.querySelectorAll(".image-chip").length));
    // Its place, held in the order the files came, until the server's chip takes it.
    var place = document.createElement("li");
    place.className = "image-chip image-chip--loading";
    place.setAttribute("aria-busy", "true");
    list.appendChild(place);
    var ok = false;
    fetch(box.dataset.uploadUrl, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken() }
    }).then(function (response) {
      return response.text().then(function (html) {
        // Both answers are our own templates' HTML (escaped there).
        if (response.ok) {
          place.insertAdjacentHTML("afterend", html);
          showAlert("");
          ok = true;
        } else if (response.status === 400) {
          showAlert(html);
        } else {
          failed();
        }
      });
    }).catch(failed).finally(function () {
      place.remove();
      sendIfWaiting(list, ok);
    });
  }

  // The landing posts its form and leaves the page: a first message sent while an image is
  // still uploading waits for it, and is not sent if an upload fails (its alert says why).
  function sendIfWaiting(list, ok) {
    var form = list.closest("#landing");
    if (!form || !form.hasAttribute("data-send-when-uploaded")) return;
    if (!ok) {
      form.removeAttribute("data-send-when-uploaded");
    } else if (!list.querySelector(".image-chip--loading")) {
      form.removeAttribute("data-send-when-uploaded");
      form.requestSubmit();
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.id !== "landing" || !form.querySelector(".image-chip--loading")) return;
    event.preventDefault();
    form.setAttribute("data-send-when-uploaded", "");
  });

  function uploadAll(files) {
    for (var i = 0; i < files.length; i += 1) upload(files[i]);
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("#attach-images")) {
      var box = input();
      if (box) box.click();
      return;
    }
    var remove = event.target.closest && event.target.closest(".image-chip__remove");
    if (!remove) return;
    fetch(remove.dataset.removeUrl, {
      method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() }
    });
    remove.closest(".image-chip").remove();
    var attach = document.getElementById("attach-images");
    if (attach) attach.focus();
  });

  document.addEventListener("change", function (event) {
    if (event.target.id !== "image-file") return;
    uploadAll(event.target.files);
    event.target.value = "";
  });

  document.addEventListener("paste", function (event) {
    if (!(event.target.closest && event.target.closest(COMPOSERS))) return;
    var files = event.clipboardData && event.clipboardData.files;
    if (!files || !files.length) return;
    event.preventDefault();  // the picture, not its file name, is what was pasted
    uploadAll(files);
  });

  function dragsFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return types && Array.prototype.indexOf.call(types, "Files") !== -1;
  }
  ["dragenter", "dragover"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      var form = event.target.closest && event.target.closest(COMPOSERS);
      if (!form || !dragsFiles(event)) return;
      event.preventDefault();
      form.classList.add("composer--drop");
    });
  });
  document.addEventListener("dragleave", function (event) {
    var form = event.target.closest && event.target.closest(COMPOSERS);
    if (form && !form.contains(event.relatedTarget)) form.classList.remove("composer--drop");
  });
  document.addEventListener("drop", function (event) {
    var form = event.target.closest && event.target.closest(COMPOSERS);
    if (!form || !dragsFiles(event)) return;
    event.preventDefault();
    form.classList.remove("composer--drop");
    uploadAll(event.dataTransfer.files);
  });

  // Sent (the server marked the turn frame this page sent): the chips went with the message.
  document.addEventListener("htmx:wsAfterMessage", function (event) {
    if (String(event.detail.message).indexOf("data-sent") === -1) return;
    var list = chips();
    if (list) list.replaceChildren();
  });
})();
