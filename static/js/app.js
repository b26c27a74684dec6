// AgentWatch page behaviour. Loaded from a static file: the CSP forbids inline scripts and handlers.
(function () {
  "use strict";

  // Copy buttons: <button class="js-copy" data-copy-target="#id">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest(".js-copy");
    if (!button) return;
    var target = document.querySelector(button.getAttribute("data-copy-target"));
    if (!target) return;
    var text = target.textContent.trim();
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(target); });
    } else {
      selectText(target);
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected for Ctrl+C */ }
    }
  });

  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // <select class="js-autosubmit"> submits its form on change (the tenant switcher).
  document.addEventListener("change", function (event) {
    if (event.target.matches("select.js-autosubmit") && event.target.form) {
      event.target.form.requestSubmit ? event.target.form.requestSubmit() : event.target.form.submit();
    }
  });

  // Close the user menu when clicking elsewhere.
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
  });

  // htmx: show server-rendered error pages (4xx with a fragment) instead of ignoring them.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status === 400 || status === 409 || status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    } else if (status === 403 || status === 404 || status >= 500) {
      var main = document.getElementById("main");
      var note = document.createElement("p");
      note.className = "alert alert-error";
      note.setAttribute("role", "alert");
      note.textContent = status === 403 ? "Not allowed: your role cannot do this."
        : status === 404 ? "Not found: it may have been deleted." : "Something went wrong; try again.";
      main.insertBefore(note, main.firstChild);
    }
  });
})();
