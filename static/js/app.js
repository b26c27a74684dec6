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

  // htmx errors go to the page's one banner (#page-banner): a new error replaces the last one, and the next
  // request that gets an answer clears it. The server may fill the banner itself (HX-Retarget: #page-banner):
  // a page rendered for another organisation, an out-of-date CSRF token.
  var BANNER = "#page-banner";

  // Whether the banner was set by a background poll: a poll that succeeds again clears only such a banner, so
  // an error from something the user did stays readable while Activity keeps polling every 5 s.
  var bannerFromPoll = false;

  function polls(elt) {
    return !!elt && /\bevery\b/.test(elt.getAttribute("hx-trigger") || "");
  }

  // The element that made the request: event.detail.elt is not it when the answer replaced that element
  // (htmx then fires afterRequest again on a parent still in the page, as the live poller's does).
  function requester(event) {
    var config = event.detail.requestConfig;
    return (config && config.elt) || event.detail.elt;
  }

  function showBanner(text, elt) {
    var banner = document.querySelector(BANNER);
    if (banner) banner.textContent = text;
    bannerFromPoll = polls(elt);
  }

  function clearBanner() {
    var banner = document.querySelector(BANNER);
    if (banner) banner.textContent = "";
    bannerFromPoll = false;
  }

  function fillsBanner(xhr) {
    return xhr && xhr.getResponseHeader("HX-Retarget") === BANNER;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    var status = xhr.status;
    if (fillsBanner(xhr)) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
      bannerFromPoll = polls(requester(event));
    } else if (xhr.getResponseHeader("AW-Banner")) {
      // An error answer that brings the part of the page to show now (e.g. a 404 for a row someone deleted
      // meanwhile, with the list as it is); the banner says why (below).
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    } else if (status === 400 || status === 409 || status === 422) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    } else if (status === 403 || status === 404 || status >= 500) {
      showBanner(status === 403 ? "Not allowed: your role cannot do this."
        : status === 404 ? "Not found: it may have been deleted." : "Something went wrong; try again.",
        requester(event));
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    // An answer that also has something to say (AW-Banner: e.g. the row acted on was deleted meanwhile).
    var note = xhr && xhr.getResponseHeader("AW-Banner");
    if (note) showBanner(note, requester(event));
    else if (event.detail.successful && !fillsBanner(xhr)
        && (!polls(requester(event)) || bannerFromPoll)) clearBanner();
  });

  document.addEventListener("htmx:sendError", function (event) {
    showBanner("Could not reach AgentWatch: check your connection. The page updates again once it is back.",
      requester(event));
    // As it says: the next answer from the server, a live poll's too, clears it.
    bannerFromPoll = true;
  });

  // Activity's live list: rows a live poll adds to the top push as many of the oldest rows out of the bottom
  // once the list holds more than data-max-rows (rows the user loaded with "Load older events" stay until new
  // ones push them out), and "Load older events" then starts right after the last row kept, so nothing is
  // skipped. The cursor is the one the server pages with: the row's time and id, URL-safe base64 of JSON.
  var POLLER = "activity-poller";
  var rowsBeforePoll = null;

  function liveRows(list) {
    return list.querySelectorAll(":scope > details.evt");
  }

  function olderLink(list, last) {
    var cursor = btoa(JSON.stringify([last.querySelector("time").getAttribute("datetime"),
      parseInt(last.id.replace("evt-", ""), 10)])).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    var url = new URL(list.getAttribute("data-older-url"), window.location.href);
    url.searchParams.set("cursor", cursor);
    var more = document.createElement("div");
    more.className = "more";
    more.id = "activity-more";
    var link = document.createElement("a");
    link.className = "btn";
    link.textContent = "Load older events";
    link.href = url.pathname + url.search;
    link.setAttribute("hx-get", link.href);
    link.setAttribute("hx-target", "#activity-more");
    link.setAttribute("hx-swap", "outerHTML");
    more.appendChild(link);
    return more;
  }

  function loadingOlder() {
    var more = document.getElementById("activity-more");
    return !!more && (more.classList.contains("htmx-request") || !!more.querySelector(".htmx-request"));
  }

  function trimLiveList(before) {
    var list = document.getElementById("event-list");
    var max = list && parseInt(list.getAttribute("data-max-rows"), 10);
    // Not while "Load older events" is on its way: its rows follow the last row shown when it was clicked.
    if (!max || loadingOlder()) return;
    var rows = liveRows(list);
    var drop = Math.min(rows.length - before, rows.length - max);
    if (drop <= 0) return;
    for (var i = rows.length - 1; i >= rows.length - drop; i--) rows[i].remove();
    var more = olderLink(list, rows[rows.length - drop - 1]);
    var old = document.getElementById("activity-more");
    if (old) old.replaceWith(more); else list.after(more);
    htmx.process(more);
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var list = document.getElementById("event-list");
    if (list && event.detail.elt.id === POLLER) rowsBeforePoll = loadingOlder() ? null : liveRows(list).length;
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = requester(event);
    if (elt && elt.id === POLLER && rowsBeforePoll !== null) {
      if (event.detail.successful) trimLiveList(rowsBeforePoll);
      rowsBeforePoll = null;
    }
  });

  // A page restored by Back is not the moment an error happened.
  document.addEventListener("htmx:historyRestore", clearBanner);
})();
