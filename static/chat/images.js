// Images for a message: the Attach button, paste and drop on the composer upload each file
// (POST /images/upload/); the server answers with a chip (chat/_image_chip.html) whose hidden
// input sends the image's id with the message, or with the usual alert (the text stays typed).
(function () {
  "use strict";

  function input() { return document.getElementById("image-file"); }
  function chips() { return document.getElementById("composer-images"); }

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"] || "";
    } catch (error) {
      return "";
    }
  }

  function showAlert(html) {
    var alerts = document.getElementById("alerts");
    if (alerts) alerts.innerHTML = html;
  }

  function failed() {
    var alerts = document.getElementById("alerts");
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
        } else if (response.status === 400) {
          showAlert(html);
        } else {
          failed();
        }
      });
    }).catch(failed).finally(function () { place.remove(); });
  }

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
    if (!(event.target.closest && event.target.closest("#composer"))) return;
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
      var form = event.target.closest && event.target.closest("#composer");
      if (!form || !dragsFiles(event)) return;
      event.preventDefault();
      form.classList.add("composer--drop");
    });
  });
  document.addEventListener("dragleave", function (event) {
    var form = event.target.closest && event.target.closest("#composer");
    if (form && !form.contains(event.relatedTarget)) form.classList.remove("composer--drop");
  });
  document.addEventListener("drop", function (event) {
    var form = event.target.closest && event.target.closest("#composer");
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
