// ICH Detect web pages: small progressive enhancements; every page also works without JavaScript.
"use strict";

(function () {
  function formatMiB(bytes) {
    return (bytes / 1024 / 1024).toFixed(1) + " MiB";
  }

  function setupUpload(form) {
    var input = form.querySelector("input[type=file]");
    var zone = form.querySelector("[data-drop-zone]");
    var fileName = form.querySelector("[data-file-name]");
    var submit = form.querySelector("[data-submit]");
    var progressText = form.querySelector("[data-progress-text]");
    var errorBox = document.getElementById("upload-error");
    var maxBytes = Number(form.getAttribute("data-max-bytes")) || 0;
    var maxMiB = form.getAttribute("data-max-mib") || "";

    function showError(message) {
      errorBox.textContent = message;
      errorBox.hidden = false;
      errorBox.focus();
    }

    function clearError() {
      errorBox.hidden = true;
      errorBox.textContent = "";
    }

    function describeFile() {
      var file = input.files && input.files[0];
      fileName.textContent = file ? "Selected: " + file.name + " (" + formatMiB(file.size) + ")" : "";
    }

    function reset() {
      form.classList.remove("is-busy");
      form.removeAttribute("aria-busy");
      submit.disabled = false;
      progressText.textContent = "";
    }

    input.addEventListener("change", function () {
      clearError();
      describeFile();
    });

    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("is-dragover");
      });
    });
    ["dragleave", "dragend"].forEach(function (name) {
      zone.addEventListener(name, function () {
        zone.classList.remove("is-dragover");
      });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("is-dragover");
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || files.length === 0) {
        return;
      }
      if (files.length > 1) {
        showError("Drop one slice at a time; " + files.length + " files were dropped.");
        return;
      }
      input.files = files;
      clearError();
      describeFile();
    });
    // A file dropped outside the zone would otherwise replace the page.
    window.addEventListener("dragover", function (event) { event.preventDefault(); });
    window.addEventListener("drop", function (event) {
      if (!zone.contains(event.target)) {
        event.preventDefault();
      }
    });

    form.addEventListener("submit", function (event) {
      var file = input.files && input.files[0];
      if (!file) {
        event.preventDefault();
        showError("Choose a CT slice to analyse: a PNG, JPEG or DICOM file.");
        return;
      }
      if (maxBytes && file.size > maxBytes) {
        event.preventDefault();
        showError("“" + file.name + "” is " + formatMiB(file.size) + "; the limit is " + maxMiB + " MiB.");
        return;
      }
      if (file.size === 0) {
        event.preventDefault();
        showError("“" + file.name + "” is empty. Choose a CT slice: a PNG, JPEG or DICOM file.");
        return;
      }
      clearError();
      form.classList.add("is-busy");
      form.setAttribute("aria-busy", "true");
      submit.disabled = true;
      progressText.textContent = "Analysing " + file.name + "… this takes a few seconds.";
    });

    // Coming back with the Back button shows the form ready again, not stuck in "Analysing".
    window.addEventListener("pageshow", reset);
  }

  function setupOverlay() {
    var overlay = document.getElementById("overlay-image");
    var controls = document.querySelector("[data-overlay-controls]");
    if (!overlay || !controls) {
      return;
    }
    var slider = document.getElementById("overlay-opacity");
    var output = document.getElementById("overlay-opacity-value");
    var toggle = document.getElementById("overlay-toggle");

    function applyOpacity() {
      overlay.style.opacity = String(Number(slider.value) / 100);
      output.textContent = slider.value + "%";
    }

    slider.addEventListener("input", applyOpacity);
    toggle.addEventListener("change", function () {
      overlay.hidden = !toggle.checked;
      slider.disabled = !toggle.checked;
    });
    controls.hidden = false;
    applyOpacity();
  }

  function setupContours() {
    var contours = document.getElementById("contours-image");
    var controls = document.querySelector("[data-contour-controls]");
    if (!contours || !controls) {
      return;
    }
    var toggle = document.getElementById("contours-toggle");
    toggle.addEventListener("change", function () {
      contours.hidden = !toggle.checked;
    });
    controls.hidden = false;
  }

  function setupStudyUpload(form) {
    var input = form.querySelector("input[type=file]");
    var fileName = form.querySelector("[data-study-file-names]");
    var submit = form.querySelector("[data-submit]");
    var progressText = form.querySelector("[data-progress-text]");
    var errorBox = document.getElementById("study-upload-error");
    var maxBytes = Number(form.getAttribute("data-max-bytes")) || 0;
    var maxMiB = form.getAttribute("data-max-mib") || "";

    function totalBytes() {
      var total = 0;
      for (var index = 0; index < input.files.length; index += 1) {
        total += input.files[index].size;
      }
      return total;
    }

    function showError(message) {
      errorBox.textContent = message;
      errorBox.hidden = false;
      errorBox.focus();
    }

    input.addEventListener("change", function () {
      errorBox.hidden = true;
      var count = input.files ? input.files.length : 0;
      fileName.textContent = count ? "Selected: " + count + " file" + (count === 1 ? "" : "s") +
        " (" + formatMiB(totalBytes()) + ")" : "";
    });

    form.addEventListener("submit", function (event) {
      var count = input.files ? input.files.length : 0;
      if (!count) {
        event.preventDefault();
        showError("Choose the DICOM files of one CT series, or one ZIP of them.");
        return;
      }
      if (maxBytes && totalBytes() > maxBytes) {
        event.preventDefault();
        showError("The files are " + formatMiB(totalBytes()) + " together; the limit is " + maxMiB + " MiB.");
        return;
      }
      form.classList.add("is-busy");
      form.setAttribute("aria-busy", "true");
      submit.disabled = true;
      progressText.textContent = "Sending " + count + " file" + (count === 1 ? "" : "s") + "… the study page then shows how far the analysis is.";
    });

    window.addEventListener("pageshow", function () {
      form.classList.remove("is-busy");
      form.removeAttribute("aria-busy");
      submit.disabled = false;
      progressText.textContent = "";
    });
  }

  function setupScroller(scroller) {
    var items = Array.prototype.slice.call(scroller.querySelectorAll("[data-slice-list] li"));
    var image = scroller.querySelector("[data-scroller-image]");
    var status = scroller.querySelector("[data-scroller-status]");
    var range = scroller.querySelector("[data-scroller-range]");
    var view = scroller.querySelector("[data-scroller-view]");
    var previous = scroller.querySelector("[data-scroller-previous]");
    var next = scroller.querySelector("[data-scroller-next]");
    var cursor = document.querySelector("[data-chart-cursor]");
    var contours = scroller.querySelector("[data-scroller-contours]");
    var contoursToggle = scroller.querySelector("[data-scroller-contours-toggle]");
    if (!items.length || !image || !range) {
      return;
    }
    if (contours && contoursToggle) {
      contoursToggle.addEventListener("change", function () {
        contours.hidden = !contoursToggle.checked;
      });
    }
    var current = Number(scroller.getAttribute("data-start")) || 0;

    function show(index) {
      current = Math.max(0, Math.min(items.length - 1, index));
      var item = items[current];
      var number = current + 1;
      var key = item.getAttribute("data-key") === "true";
      image.src = item.getAttribute("data-overlay");
      if (contours && item.getAttribute("data-contours")) {
        contours.src = item.getAttribute("data-contours");
      }
      image.alt = "Slice " + number + " of " + items.length + " with the Grad-CAM overlay";
      status.textContent = "Slice " + number + " of " + items.length + ": probability " +
        item.getAttribute("data-percent") + (key ? " (key slice)" : "");
      range.value = String(current);
      previous.disabled = current === 0;
      next.disabled = current === items.length - 1;
      if (cursor) {
        var width = Number(cursor.getAttribute("data-chart-width"));
        var x = items.length === 1 ? width / 2 : current / (items.length - 1) * width;
        cursor.setAttribute("x1", x.toFixed(1));
        cursor.setAttribute("x2", x.toFixed(1));
      }
    }

    range.addEventListener("input", function () { show(Number(range.value)); });
    previous.addEventListener("click", function () { show(current - 1); });
    next.addEventListener("click", function () { show(current + 1); });
    view.addEventListener("keydown", function (event) {
      var moves = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1, PageUp: -10, PageDown: 10 };
      if (event.key === "Home") {
        event.preventDefault();
        show(0);
      } else if (event.key === "End") {
        event.preventDefault();
        show(items.length - 1);
      } else if (Object.prototype.hasOwnProperty.call(moves, event.key)) {
        event.preventDefault();
        show(current + moves[event.key]);
      }
    });
    scroller.querySelector("[data-scroller-controls]").hidden = false;
    scroller.classList.add("is-enhanced");
    show(current);
  }

  // A study being analysed: follow its job (JSON) and show the slices done; when it ends, the
  // page is loaded again and shows the result, or says why the analysis failed.
  function setupJob(section) {
    var url = section.getAttribute("data-job");
    var bar = section.querySelector("[data-job-bar]");
    var text = section.querySelector("[data-job-text]");
    var title = section.querySelector("[data-job-title]");
    var failure = section.querySelector("[data-job-failure]");

    function show(job) {
      var total = job.progress.total;
      bar.max = total || 1;
      bar.value = job.progress.done;
      bar.textContent = job.progress.done + " of " + total;
      text.textContent = job.progress.done + " of " + total + " slice" + (total === 1 ? "" : "s");
      section.setAttribute("data-job-status", job.status);
      title.textContent = job.status === "queued" ? "Waiting for a free worker" : "Analysing the slices";
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("status " + response.status);
          }
          return response.json();
        })
        .then(function (job) {
          show(job);
          if (job.status === "done" || job.status === "failed") {
            window.location.reload();
            return;
          }
          window.setTimeout(poll, 1000);
        })
        .catch(function () {
          failure.querySelector("p").textContent = "The progress could not be read; reload the page to try again.";
          failure.hidden = false;
        });
    }

    window.setTimeout(poll, 500);
  }

  function setupConfirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) {
          event.preventDefault();
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("upload-form");
    if (form) {
      setupUpload(form);
    }
    var error = document.getElementById("upload-error");
    if (error && !error.hidden) {
      error.focus();
    }
    var studyForm = document.getElementById("study-upload-form");
    if (studyForm) {
      setupStudyUpload(studyForm);
    }
    var studyError = document.getElementById("study-upload-error");
    if (studyError && !studyError.hidden) {
      studyError.focus();
    }
    var scroller = document.querySelector("[data-scroller]");
    if (scroller) {
      setupScroller(scroller);
    }
    var job = document.querySelector("[data-job]");
    if (job) {
      setupJob(job);
    }
    setupOverlay();
    setupContours();
    setupConfirmations();
  });
})();
