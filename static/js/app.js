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
    setupOverlay();
    setupConfirmations();
  });
})();
