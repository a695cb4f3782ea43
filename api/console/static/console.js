// Console behaviour on top of server-rendered pages: optimistic task moves with
// visible roll-back, drag and drop between board columns, and the live event tail.
// Everything here is an enhancement; every page works without it.
(function () {
  "use strict";

  function announce(text) {
    var region = document.getElementById("announcer");
    if (region) { region.textContent = ""; region.textContent = text; }
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // -- task board ---------------------------------------------------------------------
  var origins = new WeakMap();

  function columnFor(status) {
    return document.querySelector('ol.cards[data-status="' + status + '"]');
  }

  function cardTitle(card) {
    var h = card.querySelector("h3");
    return h ? h.textContent : "task";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // the status a move asks for: the menu button that submitted it, or a drop
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("form.move button[name=status]");
    if (button) { button.form.setAttribute("data-target", button.value); }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (!form.classList || !form.classList.contains("move")) { return; }
    var card = form.closest("li.card");
    var target = columnFor(form.getAttribute("data-target"));
    origins.set(form, { card: card, parent: card.parentNode, next: card.nextSibling });
    var error = card.querySelector(".card-error");
    if (error) { error.hidden = true; error.textContent = ""; }
    var menu = form.closest("details");
    if (menu) { menu.open = false; }
    card.classList.remove("rolled-back");
    card.classList.add("moving");
    if (target && target !== card.parentNode) { target.insertBefore(card, target.firstChild); }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    var origin = form.classList && form.classList.contains("move") ? origins.get(form) : null;
    if (!origin) { return; }
    origins.delete(form);
    var card = origin.card;
    card.classList.remove("moving");
    if (event.detail.successful) {
      announce("Moved " + cardTitle(card) + ".");
      return;
    }
    origin.parent.insertBefore(card, origin.next);
    var xhr = event.detail.xhr;
    var body = xhr && xhr.responseText ? xhr.responseText.trim() : "";
    if (body.indexOf("<li") === 0) {
      // a refused move answers the card as the task is now, with the reason on it
      var holder = document.createElement("ol");
      holder.innerHTML = body;
      var fresh = holder.firstElementChild;
      card.replaceWith(fresh);
      fresh.classList.add("rolled-back");
      if (window.htmx) { window.htmx.process(fresh); }
      var notice = fresh.querySelector(".card-notice");
      announce(notice ? notice.textContent : "Not moved.");
      return;
    }
    card.classList.add("rolled-back");
    var why = xhr && xhr.status ? "the service answered " + xhr.status : "the service did not answer";
    var error = card.querySelector(".card-error");
    if (error) { error.textContent = "Not moved: " + why + ". Try again in a moment."; error.hidden = false; }
    announce("Could not move " + cardTitle(card) + ": " + why + ".");
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var card = event.detail.target;
    if (card && card.classList && card.classList.contains("card")) {
      var summary = document.querySelector("#" + CSS.escape(card.id) + " summary");
      if (summary) { summary.focus(); }
    }
  });

  document.addEventListener("dragstart", function (event) {
    var card = event.target.closest && event.target.closest("li.card");
    if (card) { event.dataTransfer.setData("text/plain", card.id); }
  });
  document.addEventListener("dragover", function (event) {
    if (event.target.closest && event.target.closest("ol.cards")) { event.preventDefault(); }
  });
  document.addEventListener("drop", function (event) {
    var column = event.target.closest && event.target.closest("ol.cards");
    var card = column && document.getElementById(event.dataTransfer.getData("text/plain"));
    if (!card || card.parentNode === column) { return; }
    event.preventDefault();
    var status = column.getAttribute("data-status");
    var button = card.querySelector('form.move button[value="' + status + '"]');
    if (button) { button.click(); }
  });

  // -- execution timeline ---------------------------------------------------------------
  document.addEventListener("input", function (event) {
    if (event.target.id === "scrubber") {
      var out = document.getElementById("scrub-out");
      if (out) { out.textContent = event.target.value; }
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var seqNode = document.getElementById("state-seq");
    if (!seqNode || event.detail.target.id !== "state-panel") { return; }
    var seq = seqNode.textContent;
    var scrubber = document.getElementById("scrubber");
    if (scrubber && scrubber.value !== seq) { scrubber.value = seq; }
    var out = document.getElementById("scrub-out");
    if (out) { out.textContent = seq; }
    document.querySelectorAll("ol.timeline li").forEach(function (li) {
      var link = li.querySelector("a[data-seq]");
      li.classList.toggle("current", !!link && link.getAttribute("data-seq") === seq);
    });
  });

  // -- live event tail ----------------------------------------------------------------
  function eventRow(e) {
    var row = document.createElement("tr");
    row.className = "sev-" + e.severity + " fresh";
    row.setAttribute("data-seq", String(e.sequence));
    var time = document.createElement("time");
    time.setAttribute("datetime", e.ts);
    time.textContent = new Date(e.ts).toLocaleTimeString();
    var code = document.createElement("code");
    code.textContent = JSON.stringify(e.attributes);
    var cells = [String(e.sequence), time, e.severity, e.type, e.task_id || "", code];
    cells.forEach(function (value, i) {
      var cell = document.createElement("td");
      if (typeof value === "string") { cell.textContent = value; } else { cell.appendChild(value); }
      if (i === 3) { cell.className = "type"; }
      row.appendChild(cell);
    });
    return row;
  }

  function startTail(table) {
    var body = table.querySelector("tbody");
    var state = document.getElementById("live-state");
    var last = Number(table.getAttribute("data-after")) || 0;
    var source = null;
    var retry = 500;

    function setState(text) { if (state) { state.textContent = text; } }

    function connect() {
      var url = table.getAttribute("data-stream") + "&after=" + String(last);
      source = new EventSource(url);
      source.onopen = function () { retry = 500; setState("Live: new events appear at the top."); };
      source.onmessage = function (message) {
        var e = JSON.parse(message.data);
        if (e.sequence <= last) { return; }
        last = e.sequence;
        body.insertBefore(eventRow(e), body.firstChild);
        while (body.rows.length > 500) { body.deleteRow(body.rows.length - 1); }
      };
      source.onerror = function () {
        if (source.readyState === EventSource.CLOSED) {
          // the browser gave up (an error status): start again after the last event seen
          setState("Reconnecting…");
          setTimeout(connect, retry);
          retry = Math.min(retry * 2, 10000);
        } else {
          setState("Reconnecting…");
        }
      };
    }
    connect();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("event-tail");
    if (table && window.EventSource) { startTail(table); }
  });
})();
