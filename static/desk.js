// The desk's own script: no framework, no inline handlers (the CSP forbids them).
(function () {
  "use strict";

  // Remember the browser's timezone so server-rendered times are in the viewer's zone.
  // IANA names ("America/New_York", "Etc/GMT+9") are valid cookie values as they are; the
  // server reads the cookie verbatim, so it must not be percent-encoded ("%2F" is no zone).
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var current = (document.cookie.match(/(?:^|;\s*)helpdesk_tz=([^;]*)/) || [])[1];
    if (tz && /^[A-Za-z0-9_+\-\/]+$/.test(tz) && current !== tz) {
      document.cookie = "helpdesk_tz=" + tz + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) { /* old browser: the server's default zone is used */ }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every htmx request carries the CSRF token in a header.
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // Show server-side validation messages that htmx would otherwise drop (4xx responses).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status === 409 || status === 422 || status === 403) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // The note and reply boxes survive the timeline's live refreshes (hx-preserve): a colleague's
  // change must not wipe what I am typing. So once one of them is sent, empty it here, just
  // before the answer is swapped in (the form is still in the page then).
  document.addEventListener("htmx:beforeSwap", function (event) {
    // (fired on the target; the element that made the request is in requestConfig)
    var form = event.detail.requestConfig && event.detail.requestConfig.elt;
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (!form || !form.matches || !form.matches("form.note-form, form.reply-form")) { return; }
    if (status < 200 || status >= 300) { return; }
    var box = document.getElementById(form.classList.contains("note-form") ? "note-body" : "reply-body");
    if (box) { box.value = ""; }
  });

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el && el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) {
      el.form.submit();
    }
  });

  // "/" focuses the search box, as in most agent tools.
  document.addEventListener("keydown", function (event) {
    var tag = (event.target && event.target.tagName) || "";
    if (event.key === "/" && !/INPUT|TEXTAREA|SELECT/.test(tag)) {
      var box = document.getElementById("customer-search") || document.getElementById("global-search");
      if (box) { event.preventDefault(); box.focus(); }
    }
  });
})();

// The agent workspace, live: one socket per tab to /ws/agent (session cookie), toasts for
// events addressed to me, in-place refresh of what the page shows, presence, shortcuts.
(function () {
  "use strict";
  var body = document.body;
  var me = body && body.getAttribute("data-user-id");
  if (!me) { return; }  // the login page has no socket
  me = parseInt(me, 10);

  var toasts = document.getElementById("toasts");
  var live = document.getElementById("live-status");
  var presence = document.getElementById("presence");
  var dialog = document.getElementById("shortcuts");
  var soundBox = document.getElementById("sound-cue");
  var watch = (body.getAttribute("data-watch") || "").split(/\s+/).filter(Boolean);
  var socket = null, backoff = 1000, everConnected = false;

  function message(name, data) {
    var text = (toasts && toasts.getAttribute("data-msg-" + name)) || name;
    return text.replace(/%\((\w+)\)s/g, function (_, key) {
      return data && data[key] != null ? String(data[key]) : "";
    });
  }

  function toast(text, href) {
    if (!toasts) { return; }
    var el = document.createElement(href ? "a" : "div");
    el.className = "toast";
    el.setAttribute("role", "status");
    el.textContent = text;
    if (href) { el.href = href; }
    toasts.appendChild(el);
    setTimeout(function () { el.classList.add("leaving"); }, 7000);
    setTimeout(function () { el.remove(); }, 8000);
  }

  function cue() {
    document.title = "● " + document.title.replace(/^● /, "");
    if (!soundBox || !soundBox.checked) { return; }
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.frequency.value = 880; gain.gain.value = 0.08;
      osc.connect(gain); gain.connect(ctx.destination);
      osc.start(); osc.stop(ctx.currentTime + 0.15);
    } catch (e) { /* no audio: the toast and title are the cue */ }
  }
  window.addEventListener("focus", function () { document.title = document.title.replace(/^● /, ""); });

  if (soundBox) {
    soundBox.checked = localStorage.getItem("helpdesk.sound") === "on";
    soundBox.addEventListener("change", function () {
      localStorage.setItem("helpdesk.sound", soundBox.checked ? "on" : "off");
    });
  }

  var pending = {};
  function refresh(what) {
    // Coalesce bursts: one reload per region however many events arrive together.
    if (pending[what]) { return; }
    pending[what] = setTimeout(function () {
      delete pending[what];
      if (window.htmx) { window.htmx.trigger(body, what); }
    }, 150);
  }
  function refreshAll() { ["queue-changed", "case-changed", "customer-changed"].forEach(refresh); }

  function setLive(state) { if (live) { live.setAttribute("data-state", state); } }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(frame)); }
  }
  // The chats panel (chat-panel.js) sends its frames over this socket.
  body.addEventListener("desk:send", function (event) { if (event.detail) { send(event.detail); } });

  function onCaseUpdated(ev) {
    // previous_assignee_id is set only when the assignee changed.
    var moved = ev.previous_assignee_id !== null && ev.previous_assignee_id !== undefined;
    var kind = ev.change === "note" ? "note"
      : ev.assignee_id === me && (ev.change === "created" || moved) ? "assigned"
      : moved && ev.previous_assignee_id === me ? "unassigned"
      : "updated";
    var addressed = ev.assignee_id === me || ev.previous_assignee_id === me;
    if (addressed && ev.actor_id !== me) {
      toast(message(kind, ev), "/cases/" + ev.case_id);
      cue();
    }
    // Other tabs (mine included) refresh whatever part of the page shows this case.
    if (watch.indexOf("case:" + ev.case_id) !== -1) { refresh("case-changed"); }
    if (watch.indexOf("customer:" + ev.customer_id) !== -1) { refresh("customer-changed"); }
    if (watch.indexOf("queue") !== -1) { refresh("queue-changed"); }
  }

  // Screen-pops: the frame says which call rang; the card itself is rendered by the server
  // (in my language and timezone) and swapped in by htmx.
  var pops = document.getElementById("screen-pops");
  function showPop(callId) {
    if (!pops || !window.htmx) { return; }
    var slot = document.getElementById("pop-" + callId);
    if (!slot) {
      slot = document.createElement("div");
      slot.id = "pop-" + callId;
      pops.prepend(slot);
    }
    window.htmx.ajax("GET", "/calls/" + callId + "/card", { target: slot, swap: "outerHTML" });
  }
  function onCallUpdate(ev) {
    var slot = document.getElementById("pop-" + ev.id);
    if (!slot) { return; }
    if (ev.agent_id && ev.agent_id !== me && ev.answered_at) { slot.remove(); return; }  // answered elsewhere
    // Re-render only when the call's state changed. An attach made in this panel re-renders
    // it from its own response; its echo (which can arrive first) must not swap the panel
    // under the agent's hands.
    if (slot.getAttribute("data-state") === ev.state) { return; }
    var notes = slot.querySelector("textarea[name=notes]");
    if (notes && document.activeElement === notes) { return; }  // never clobber typing
    showPop(ev.id);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-dismiss-pop]");
    if (button) { var pop = button.closest(".pop"); if (pop) { pop.remove(); } }
  });

  function onPresence(ev) {
    if (ev.user_id === me && presence) {
      presence.value = ev.chosen;
      presence.setAttribute("data-effective", ev.status);
      presence.title = ev.status;
    }
    var row = document.querySelector('[data-presence-of="' + ev.user_id + '"]');
    if (row) {
      row.setAttribute("data-status", ev.status);
      var label = row.querySelector(".presence-label");
      var option = presence && presence.querySelector('option[value="' + ev.status + '"]');
      if (label) { label.textContent = option ? option.textContent : ev.status; }
    }
  }

  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent";
    setLive("connecting");
    socket = new WebSocket(url);
    socket.onopen = function () {
      backoff = 1000;
      if (watch.length) { send({ type: "watch", topics: watch }); }
    };
    socket.onmessage = function (msg) {
      var ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      switch (ev.type) {
        case "hello":
          setLive("live");
          onPresence(ev.presence);
          if (everConnected) { refreshAll(); toast(message("reconnected")); }
          everConnected = true;
          body.dispatchEvent(new CustomEvent("desk:connected"));
          break;
        case "ping": send({ type: "pong" }); break;
        case "presence": onPresence(ev); break;
        case "case_updated": onCaseUpdated(ev); break;
        case "screen_pop": showPop(ev.call.id); cue(); break;
        case "call_update": onCallUpdate(ev); break;
        case "resync": refreshAll(); break;
        case "sla_warning":
        case "sla_breach":
          // An SLA clock of a case of mine (or my team's) is about to break, or broke.
          toast(message(ev.type, ev), "/cases/" + ev.case_id);
          cue();
          if (watch.indexOf("case:" + ev.case_id) !== -1) { refresh("case-changed"); }
          break;
        default:
          body.dispatchEvent(new CustomEvent("desk:" + ev.type, { detail: ev }));
      }
    };
    socket.onclose = function (event) {
      setLive("offline");
      if (event.code === 4401) {  // signed out or expired: back to the login form
        location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
        return;
      }
      if (event.code === 4403) { return; }
      if (everConnected) { toast(message("offline")); }
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
  }

  if (presence) {
    presence.addEventListener("change", function () { send({ type: "presence", status: presence.value }); });
  }

  // Shortcuts: g q (queue), g c (cases), g u (customers), r (reply), n (note), ? (help). "/" is handled above.
  var lastG = 0;
  document.addEventListener("keydown", function (event) {
    var tag = (event.target && event.target.tagName) || "";
    if (/INPUT|TEXTAREA|SELECT/.test(tag) || event.target.isContentEditable || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "?") {
      event.preventDefault();
      if (dialog && !dialog.open) { dialog.showModal(); }
      return;
    }
    if (event.key === "g") { lastG = Date.now(); return; }
    // r: reply to the customer, n: internal note (on a case page).
    var field = { r: "reply-body", n: "note-body" }[event.key];
    if (field && Date.now() - lastG >= 1500 && document.getElementById(field)) {
      event.preventDefault();
      document.getElementById(field).focus();
      return;
    }
    if (Date.now() - lastG < 1500) {
      var target = { q: "/agent", c: "/cases", u: "/customers" }[event.key];
      lastG = 0;
      if (target) { event.preventDefault(); location.href = target; }
    }
  });
  var helpButton = document.getElementById("help-button");
  if (helpButton && dialog) { helpButton.addEventListener("click", function () { dialog.showModal(); }); }

  if (window.WebSocket) { connect(); }
})();

// Knowledge base: "Insert link" (case sidebar) puts an article's public address into the
// reply at the cursor, replacing any selection; a <button>, so Enter and Space work too.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-insert-link]");
    if (!button) { return; }
    var url = button.getAttribute("data-insert-link");
    var box = document.getElementById("reply-body");
    if (!box || box.disabled) {
      // No email reply on this case: offer the address on the clipboard instead.
      if (navigator.clipboard) { navigator.clipboard.writeText(url).catch(function () {}); }
      button.setAttribute("data-copied", "true");
      return;
    }
    var start = box.selectionStart, end = box.selectionEnd;
    var before = box.value.slice(0, start), after = box.value.slice(end);
    var text = (before && !/\s$/.test(before) ? " " : "") + url + (after && !/^\s/.test(after) ? " " : "");
    box.setRangeText(text, start, end, "end");
    box.dispatchEvent(new Event("input", { bubbles: true }));
    box.focus();
  });
})();
