// The chats panel of the agent workspace (issue 6, "Agent side"; the contract is docs/CHAT.md).
// No framework, no inline handlers (the CSP is script-src 'self').
//
// Fed by the page's one /ws/agent socket: desk.js re-dispatches the chat events on
// document.body as `desk:<type>` and sends our frames when we dispatch `desk:send`; it
// dispatches `desk:connected` on every (re)connect, when we reload /api/chats and the
// open conversation so nothing is missed. Every visible string comes from the panel's
// data-msg-* attributes (rendered in the viewer's language by templates/chats/_panel.html).
(function () {
  "use strict";
  var panel = document.getElementById("chats-panel");
  var body = document.body;
  if (!panel || !window.fetch || !window.CustomEvent) { return; }

  var me = parseInt(panel.getAttribute("data-me"), 10);
  var meName = panel.getAttribute("data-me-name") || "";
  var role = panel.getAttribute("data-role") || "agent";
  var isBoss = role === "supervisor" || role === "admin";
  var uiLang = document.documentElement.getAttribute("lang") || undefined;

  var ACK_TIMEOUT = 5000;      // chat_send without chat_ack: fall back to the HTTP API
  var TYPING_EVERY = 2000;     // at most one chat_typing on:true per 2 s
  var TYPING_IDLE = 3000;      // on:false after 3 s without a keystroke
  var REFRESH_EVERY = 30000;   // the waiting queue has no events for plain agents
  var MAX_CHARS = 2000;
  var STORE_COLLAPSED = "helpdesk.chats.collapsed";
  var STORE_CURRENT = "helpdesk.chats.current";
  var STORE_DRAFT = "helpdesk.chats.draft.";
  var ENDED = { closed: true, abandoned: true };
  var IN_QUEUE = { queued: true, offered: true };

  function byId(id) { return document.getElementById(id); }
  var el = {
    toggle: byId("chats-toggle"), box: byId("chats-body"), notice: byId("chats-notice"),
    toggleOffers: byId("chats-toggle-offers"), toggleUnread: byId("chats-toggle-unread"),
    offers: byId("chats-offers"), offerList: byId("chat-offer-list"),
    mineList: byId("chat-mine-list"), mineEmpty: byId("chat-mine-empty"), mineCount: byId("chat-mine-count"),
    waitingList: byId("chat-waiting-list"), waitingEmpty: byId("chat-waiting-empty"),
    waitingCount: byId("chat-waiting-count"),
    view: byId("chat-view"), viewName: byId("chat-view-name"), viewState: byId("chat-view-state"),
    viewHide: byId("chat-view-hide"), caseLink: byId("chat-case-link"),
    customerLink: byId("chat-customer-link"), viewTeam: byId("chat-view-team"),
    messages: byId("chat-messages"), typing: byId("chat-typing"), readonly: byId("chat-readonly"),
    composer: byId("chat-composer"), input: byId("chat-input"), hint: byId("chat-canned-hint"),
    canned: byId("chat-canned"), send: byId("chat-send"), composeError: byId("chat-compose-error"),
    kb: byId("chat-kb"), kbQ: byId("chat-kb-q"), kbResults: byId("chat-kb-results"),
    transfer: byId("chat-transfer"), transferTo: byId("chat-transfer-to"),
    transferSubmit: byId("chat-transfer-submit"), close: byId("chat-close")
  };

  // -- state ---------------------------------------------------------------------------------
  var offers = {};      // id -> {summary, expiresAt (ms, NaN when unknown)}
  var mine = {};        // id -> summary: my active chats
  var waiting = {};     // id -> summary: the queue
  var teams = {};       // team_id -> name, from /api/teams and the summaries
  var convs = {};       // id -> {id, summary, messages: {seq: message}, maxSeq, readSent}
  var pending = {};     // client_id -> {id, conversation, body, timer, posting, failed, error}
  var accepting = {};   // offer ids being accepted by this tab
  var leaving = {};     // conversation ids this tab is transferring or closing
  var current = null;   // the conversation in the view
  var watched = null;   // the "chat:ID" topic this tab watches (a chat that is not mine)
  var collapsed = true;
  var loaded = false, loading = null, reloadAgain = false;
  var agents = null, agentsAt = 0;
  var canned = {};      // language -> items (or a promise while loading)
  var needsAttention = false;
  var touched = {};     // id -> when a live event or an answer last changed that chat here
  function touch(id) { if (id !== null && id !== undefined) { touched[id] = Date.now(); } }

  // -- small helpers -------------------------------------------------------------------------
  function msg(name, data) {
    var text = panel.getAttribute("data-msg-" + name) || name;
    return text.replace(/%\((\w+)\)s/g, function (_, key) {
      return data && data[key] != null ? String(data[key]) : "";
    });
  }
  function idOf(x) {
    var v = x && typeof x === "object" ? x.id : x;
    v = typeof v === "string" ? parseInt(v, 10) : v;
    return typeof v === "number" && !isNaN(v) ? v : null;
  }
  function merge(into, from) {
    into = into || {};
    if (from) { for (var k in from) { if (Object.prototype.hasOwnProperty.call(from, k)) { into[k] = from[k]; } } }
    return into;
  }
  function values(map) { return Object.keys(map).map(function (k) { return map[k]; }); }
  function nameOf(s) { return (s && s.visitor && s.visitor.name) || msg("visitor"); }
  function parseTime(iso) { return iso ? Date.parse(iso) : NaN; }
  function timeText(iso) {
    var t = parseTime(iso);
    if (isNaN(t)) { return ""; }
    try {
      return new Date(t).toLocaleTimeString(uiLang, { hour: "2-digit", minute: "2-digit" });
    } catch (e) { return new Date(t).toLocaleTimeString(); }
  }
  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return h ? h + ":" + pad(m) + ":" + pad(r) : m + ":" + pad(r);
  }
  function previewOf(m) {
    var text = (m && m.body) || (m && m.attachment && m.attachment.filename) || "";
    return text.length > 120 ? text.slice(0, 120) : text;
  }
  // Only addresses of this desk: a link in a message must never become javascript: or a
  // request to another host (the page's tests forbid foreign requests too).
  function safeUrl(url, fallback) {
    if (typeof url !== "string" || !url) { return fallback; }
    try {
      var u = new URL(url, location.href);
      return u.origin === location.origin ? u.pathname + u.search + u.hash : fallback;
    } catch (e) { return fallback; }
  }
  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text != null) { node.textContent = text; }
    return node;
  }
  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  function randomId() {
    var bytes = new Uint8Array(12);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(bytes);
    } else {
      for (var i = 0; i < bytes.length; i++) { bytes[i] = Math.floor(Math.random() * 256); }
    }
    return "a-" + Array.prototype.map.call(bytes, function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join("");
  }
  function store(kind, key, value) {
    try {
      var s = kind === "local" ? window.localStorage : window.sessionStorage;
      if (value === undefined) { return s.getItem(key); }
      if (value === null) { s.removeItem(key); } else { s.setItem(key, value); }
    } catch (e) { /* storage off: nothing is remembered */ }
    return null;
  }

  // JSON over fetch; POSTs carry the CSRF header. Rejects with {status, message}.
  function api(method, url, data) {
    var options = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") {
      options.headers["Content-Type"] = "application/json";
      options.headers["X-CSRF-Token"] = csrfToken();
      options.body = JSON.stringify(data || {});
    }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
        if (!response.ok) {
          var error = new Error((json && json.error && json.error.message) || (json && json.message) ||
            (response.status + " " + response.statusText));
          error.status = response.status;
          error.serverMessage = (json && json.error && json.error.message) || "";
          throw error;
        }
        return json;
      });
    }, function (err) {
      var error = new Error(err && err.message ? err.message : String(err));
      error.status = 0;
      throw error;
    });
  }

  function isLive() {
    var live = byId("live-status");
    return !!live && live.getAttribute("data-state") === "live";
  }
  function frame(f) { body.dispatchEvent(new CustomEvent("desk:send", { detail: f })); }

  var noticeTimer = null;
  function notice(text, kind) {
    if (!el.notice) { return; }
    el.notice.textContent = text;
    el.notice.setAttribute("data-kind", kind || "info");
    el.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { el.notice.hidden = true; }, 10000);
  }

  // The page's attention cue (as desk.js does for toasts): "● " before the title, and a
  // short beep when the agent turned sounds on in the shortcuts dialog.
  function cue() {
    document.title = "● " + document.title.replace(/^● /, "");
    var box = byId("sound-cue");
    if (!box || !box.checked) { return; }
    try {
      var ctx = new (window.AudioContext || window.webkitAudioContext)();
      var osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.frequency.value = 660; gain.gain.value = 0.08;
      osc.connect(gain); gain.connect(ctx.destination);
      osc.start(); osc.stop(ctx.currentTime + 0.2);
    } catch (e) { /* no audio: the title is the cue */ }
  }

  // -- collapsing ----------------------------------------------------------------------------
  function setCollapsed(value, remember) {
    collapsed = value;
    panel.setAttribute("data-collapsed", value ? "true" : "false");
    el.box.hidden = value;
    el.toggle.setAttribute("aria-expanded", value ? "false" : "true");
    body.classList.toggle("chats-docked", !value);
    body.classList.toggle("chats-tucked", value);
    if (remember) { store("local", STORE_COLLAPSED, value ? "1" : "0"); }
    if (!value) { scrollToEnd(); scheduleRead(); }
  }

  // -- lists ---------------------------------------------------------------------------------
  // Keyed update of a <ul>: items keep their nodes (and focus) across renders.
  function sync(list, attr, items, build, update) {
    var seen = {};
    var existing = {};
    Array.prototype.forEach.call(list.children, function (child) {
      var key = child.getAttribute(attr);
      if (key !== null) { existing[key] = child; }
    });
    items.forEach(function (item, index) {
      var key = String(item.id);
      seen[key] = true;
      var node = existing[key];
      if (!node) { node = build(item); node.setAttribute(attr, key); }
      update(node, item);
      if (list.children[index] !== node) { list.insertBefore(node, list.children[index] || null); }
    });
    Object.keys(existing).forEach(function (key) { if (!seen[key]) { existing[key].remove(); } });
  }

  function sortedOffers() {
    return Object.keys(offers).map(function (id) { return offers[id]; }).sort(function (a, b) {
      var x = isNaN(a.expiresAt) ? Infinity : a.expiresAt, y = isNaN(b.expiresAt) ? Infinity : b.expiresAt;
      return x - y || a.summary.id - b.summary.id;
    });
  }
  function sortedMine() {
    return values(mine).sort(function (a, b) {
      var x = parseTime(a.accepted_at), y = parseTime(b.accepted_at);
      x = isNaN(x) ? Infinity : x; y = isNaN(y) ? Infinity : y;
      return (x - y) || (a.id - b.id);
    });
  }
  function sortedWaiting() {
    return values(waiting).sort(function (a, b) {
      var x = parseTime(a.queued_at), y = parseTime(b.queued_at);
      x = isNaN(x) ? Infinity : x; y = isNaN(y) ? Infinity : y;
      return (x - y) || (a.id - b.id);
    });
  }

  function renderOffers() {
    var list = sortedOffers();
    el.offers.hidden = !list.length;
    sync(el.offerList, "data-chat-offer", list.map(function (o) { return merge({ expiresAt: o.expiresAt }, o.summary); }),
      function () {
        var li = make("li", "chat-item chat-offer");
        var head = make("div", "chat-item-head");
        head.appendChild(make("strong", "chat-item-name"));
        head.appendChild(make("span", "chat-countdown"));
        li.appendChild(head);
        li.appendChild(make("p", "chat-item-preview"));
        var button = make("button", "chat-accept small", msg("accept"));
        button.type = "button";
        li.appendChild(button);
        return li;
      },
      function (li, s) {
        li.querySelector(".chat-item-name").textContent = nameOf(s);
        li.querySelector(".chat-item-preview").textContent = s.preview || "";
        var countdown = li.querySelector(".chat-countdown");
        if (isNaN(s.expiresAt)) { countdown.removeAttribute("data-expires"); countdown.textContent = ""; }
        else { countdown.setAttribute("data-expires", String(s.expiresAt)); }
        li.querySelector(".chat-accept").disabled = !!accepting[s.id];
      });
    tick();
  }

  function renderMine() {
    var list = sortedMine();
    el.mineEmpty.hidden = list.length > 0;
    el.mineCount.textContent = list.length ? "(" + list.length + ")" : "";
    sync(el.mineList, "data-chat", list,
      function () {
        var li = make("li", "chat-item");
        var button = make("button", "chat-open");
        button.type = "button";
        var head = make("span", "chat-item-head");
        head.appendChild(make("span", "chat-item-name"));
        var unread = make("span", "unread");
        head.appendChild(unread);
        button.appendChild(head);
        button.appendChild(make("span", "chat-item-preview"));
        li.appendChild(button);
        return li;
      },
      function (li, s) {
        var n = s.unread || 0;
        li.classList.toggle("current", s.id === current);
        li.classList.toggle("has-unread", n > 0);
        var button = li.querySelector(".chat-open");
        if (s.id === current) { button.setAttribute("aria-current", "true"); } else { button.removeAttribute("aria-current"); }
        li.querySelector(".chat-item-name").textContent = nameOf(s);
        li.querySelector(".chat-item-preview").textContent = s.preview || "";
        var unread = li.querySelector(".unread");
        unread.textContent = String(n);
        unread.hidden = n <= 0;
        unread.setAttribute("aria-label", msg("unread", { n: n }));
      });
  }

  function renderWaiting() {
    var list = sortedWaiting();
    el.waitingEmpty.hidden = list.length > 0;
    el.waitingCount.textContent = list.length ? "(" + list.length + ")" : "";
    sync(el.waitingList, "data-chat-waiting", list,
      function () {
        var li = make("li", "chat-item chat-waiting");
        var button = make("button", "chat-open");
        button.type = "button";
        var head = make("span", "chat-item-head");
        head.appendChild(make("span", "chat-item-name"));
        head.appendChild(make("span", "chat-wait"));
        button.appendChild(head);
        button.appendChild(make("span", "chat-item-team muted"));
        li.appendChild(button);
        return li;
      },
      function (li, s) {
        li.classList.toggle("current", s.id === current);
        li.querySelector(".chat-item-name").textContent = nameOf(s);
        li.querySelector(".chat-item-team").textContent = s.team || msg("everyone");
        var wait = li.querySelector(".chat-wait");
        var since = parseTime(s.queued_at);
        if (isNaN(since)) { wait.removeAttribute("data-since"); wait.textContent = ""; }
        else { wait.setAttribute("data-since", String(since)); }
      });
    tick();
  }

  function renderToggle() {
    var offerCount = Object.keys(offers).length;
    var unread = values(mine).reduce(function (n, s) { return n + (s.unread || 0); }, 0);
    el.toggleOffers.textContent = String(offerCount);
    el.toggleOffers.hidden = offerCount === 0;
    el.toggleUnread.textContent = String(unread);
    el.toggleUnread.hidden = unread === 0;
    el.toggleUnread.setAttribute("aria-label", msg("unread", { n: unread }));
    panel.classList.toggle("has-offers", offerCount > 0);
    // Once everything that called for attention is dealt with, the title cue goes too.
    if (offerCount || unread) { needsAttention = true; }
    else if (needsAttention && document.hasFocus()) {
      needsAttention = false;
      document.title = document.title.replace(/^● /, "");
    }
  }

  function renderLists() { renderOffers(); renderMine(); renderWaiting(); renderToggle(); }

  // Once a second: offer countdowns and waiting times, and offers whose withdrawal was lost.
  function tick() {
    var now = Date.now();
    Array.prototype.forEach.call(panel.querySelectorAll(".chat-countdown[data-expires]"), function (node) {
      var left = Math.max(0, Math.ceil((parseInt(node.getAttribute("data-expires"), 10) - now) / 1000));
      node.textContent = msg("seconds-left", { n: left });
      node.classList.toggle("urgent", left <= 5);
    });
    Array.prototype.forEach.call(panel.querySelectorAll(".chat-wait[data-since]"), function (node) {
      node.textContent = msg("waiting-for", { time: duration(now - parseInt(node.getAttribute("data-since"), 10)) });
    });
  }
  function sweepOffers() {
    var now = Date.now(), gone = false;
    Object.keys(offers).forEach(function (id) {
      var o = offers[id];
      if (!isNaN(o.expiresAt) && now > o.expiresAt + 3000 && !accepting[id]) { delete offers[id]; gone = true; }
    });
    if (gone) { renderOffers(); renderToggle(); }
  }

  // -- what we learn about a conversation ------------------------------------------------------
  function rememberTeam(s) {
    if (s && s.team_id != null && s.team) { teams[s.team_id] = s.team; }
  }

  // Apply a summary (from an event or a POST answer): which list the chat belongs in now.
  function applySummary(s, how) {
    var id = idOf(s);
    if (id === null) { return; }
    how = how || {};
    rememberTeam(s);
    touch(id);
    var before = mine[id];
    var known = before || (convs[id] && convs[id].summary) || (waiting[id]) || (offers[id] && offers[id].summary);
    var summary = merge(merge({}, known), s);
    var state = summary.state;
    var isMine = state === "active" && summary.agent_id === me;

    if (offers[id] && (state !== "offered" || isMine)) { delete offers[id]; }
    if (IN_QUEUE[state]) { waiting[id] = summary; } else { delete waiting[id]; }
    if (isMine) {
      if (before && before.unread != null && s.unread == null) { summary.unread = before.unread; }
      mine[id] = summary;
      if (!before && !accepting[id] && !how.quiet) {
        notice(msg("assigned", { name: nameOf(summary) }));
        cue();
      }
    } else if (before) {
      delete mine[id];
      if (!how.quiet && !leaving[id]) {
        if (ENDED[state]) { notice(how.by === "visitor" ? msg("closed-by-visitor") : msg("ended")); }
        else { notice(msg("moved-away", { name: nameOf(summary) })); }
      }
    }
    if (convs[id]) { convs[id].summary = merge(convs[id].summary, summary); }
    if (id === current) { renderHeader(); if (ENDED[state]) { showTyping(false); } }
    renderLists();
  }

  // -- loading -------------------------------------------------------------------------------
  // A list answer is a snapshot from when it was asked for: a live event about a chat that
  // arrived while it was on its way is newer, so for that chat what this tab knows wins.
  function keepNewer(next, local, since) {
    Object.keys(touched).forEach(function (id) {
      if (touched[id] < since) { return; }
      if (local[id]) { next[id] = local[id]; } else { delete next[id]; }
    });
    return next;
  }

  function loadChats() {
    if (loading) { reloadAgain = true; return loading; }
    var since = Date.now();
    loading = api("GET", "/api/chats").then(function (data) {
      data = data || {};
      loaded = true;
      var nextOffers = {};
      (data.offered || []).forEach(function (s) {
        rememberTeam(s);
        var old = offers[s.id];
        var expires = parseTime(s.expires_at || s.offer_expires_at);
        nextOffers[s.id] = { summary: s, expiresAt: isNaN(expires) && old ? old.expiresAt : expires };
      });
      offers = keepNewer(nextOffers, offers, since);
      var nextMine = {};
      (data.active || []).forEach(function (s) {
        rememberTeam(s);
        if (s.agent_id === me || s.agent_id == null) { nextMine[s.id] = s; }
      });
      mine = keepNewer(nextMine, mine, since);
      var nextWaiting = {};
      (data.waiting || []).forEach(function (s) { rememberTeam(s); nextWaiting[s.id] = s; });
      waiting = keepNewer(nextWaiting, waiting, since);
      Object.keys(mine).forEach(function (id) {
        if (convs[id]) { convs[id].summary = merge(convs[id].summary, mine[id]); }
      });
      if (current !== null && convs[current] && mine[current]) { renderHeader(); }
      renderLists();
      scheduleRead();
    }, function (err) {
      notice(msg("load-failed", { error: err.message }), "error");
    }).then(function () {
      loading = null;
      if (reloadAgain) { reloadAgain = false; loadChats(); }
    });
    return loading;
  }

  var reloadTimer = null;
  function scheduleReload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(loadChats, 800);
  }

  function conversation(id) {
    if (!convs[id]) {
      var known = mine[id] || waiting[id] || (offers[id] && offers[id].summary) || { id: id };
      convs[id] = { id: id, summary: merge({}, known), messages: {}, maxSeq: 0, readSent: 0 };
    }
    return convs[id];
  }

  function loadConversation(id, quiet) {
    var conv = conversation(id);
    var url = "/api/chats/" + id + (conv.maxSeq ? "?after=" + conv.maxSeq : "");
    return api("GET", url).then(function (data) {
      if (!data) { return; }
      var summary = merge({}, data);
      delete summary.messages;
      conv.summary = merge(conv.summary, summary);
      rememberTeam(conv.summary);
      var got = data.messages || [];
      got.forEach(function (m) { addMessage(conv, m); });
      if (mine[id]) { mine[id] = merge(mine[id], summary); }
      // A long conversation comes in pages: ask for the rest.
      if (got.length && typeof summary.seq === "number" && conv.maxSeq < summary.seq) {
        setTimeout(function () { loadConversation(id, quiet); }, 0);
      }
      if (id === current) { renderHeader(); scrollToEnd(); scheduleRead(); }
      renderLists();
    }, function (err) {
      if (id !== current) { return; }
      if (!quiet) { notice(msg("error", { error: err.message }), "error"); }
      if (err.status === 404 || err.status === 403) { hideView(); }
    });
  }

  // -- the conversation view -----------------------------------------------------------------
  function currentSummary() { return current !== null && convs[current] ? convs[current].summary : null; }
  function canReply(s) { return !!s && s.state === "active" && s.agent_id === me; }

  function openChat(id, options) {
    options = options || {};
    if (id === null || id === undefined) { return; }
    if (current !== id) {
      stopTyping();
      saveDraft();
      showTyping(false);
      current = id;
      store("session", STORE_CURRENT, String(id));
      var conv = conversation(id);
      el.view.hidden = false;
      panel.classList.add("has-view");
      renderHeader();
      renderMessages();
      el.input.value = store("session", STORE_DRAFT + id) || "";
      hideHint();
      el.composeError.hidden = true;
      el.kbResults.textContent = "";
      watchTopic(mine[id] ? null : "chat:" + id);
      loadCanned();
      loadAgents(false);
      loadConversation(id, options.quiet);
    } else {
      el.view.hidden = false;
      panel.classList.add("has-view");
      loadConversation(id, options.quiet);
    }
    if (collapsed && !options.keepCollapsed) { setCollapsed(false, false); }
    renderLists();
    scheduleRead();
    if (options.focus && !el.input.disabled) { el.input.focus(); }
  }

  function hideView() {
    stopTyping();
    saveDraft();
    current = null;
    store("session", STORE_CURRENT, null);
    watchTopic(null);
    el.view.hidden = true;
    panel.classList.remove("has-view");
    renderLists();
  }

  function watchTopic(topic) {
    if (watched === topic) { return; }
    if (watched) { frame({ type: "unwatch", topics: [watched] }); }
    watched = topic;
    if (topic) { frame({ type: "watch", topics: [topic] }); }
  }

  function renderHeader() {
    var s = currentSummary();
    if (!s) { return; }
    el.viewName.textContent = nameOf(s);
    var email = s.visitor && s.visitor.email;
    el.viewName.title = email || "";
    el.viewState.textContent = s.state ? msg("state-" + s.state) : "";
    el.viewState.setAttribute("data-state", s.state || "");
    if (s.case_id) {
      el.caseLink.href = "/cases/" + encodeURIComponent(s.case_id);
      el.caseLink.textContent = msg("case", { number: s.case_number || s.case_id });
      el.caseLink.hidden = false;
    } else { el.caseLink.hidden = true; }
    if (s.customer_id) {
      el.customerLink.href = "/customers/" + encodeURIComponent(s.customer_id);
      el.customerLink.hidden = false;
    } else { el.customerLink.hidden = true; }
    el.viewTeam.textContent = s.team || "";

    var reply = canReply(s);
    var ended = !!ENDED[s.state];
    el.input.disabled = !reply;
    el.send.disabled = !reply;
    el.canned.disabled = !reply;
    el.kbQ.disabled = !reply;
    el.readonly.hidden = reply;
    el.readonly.textContent = ended ? msg("ended") : (reply ? "" : msg("read-only"));
    var assignedToMe = s.agent_id === me;
    var mayTransfer = !ended && ((assignedToMe && s.state === "active") || (isBoss && s.state !== "new"));
    el.transferTo.disabled = !mayTransfer || !!leaving[s.id];
    el.transferSubmit.disabled = !mayTransfer || !!leaving[s.id];
    el.transfer.hidden = !mayTransfer;
    el.close.disabled = ended || !(assignedToMe || isBoss) || !!leaving[s.id];
    el.close.hidden = ended || !(assignedToMe || isBoss);
    if (!reply) { stopTyping(); hideHint(); }
    if (!mayTransfer) { /* nothing to load */ } else if (!agents) { loadAgents(false); } else { renderTransferOptions(); }
  }

  function nearBottom() {
    return el.messages.scrollHeight - el.messages.scrollTop - el.messages.clientHeight < 60;
  }
  function scrollToEnd() { el.messages.scrollTop = el.messages.scrollHeight; }

  function buildMessage(m) {
    var from = m.from === "visitor" || m.from === "agent" || m.from === "system" ? m.from : "system";
    var li = make("li", "chat-msg from-" + from);
    li.setAttribute("data-seq", String(m.seq));
    li.setAttribute("data-from", from);
    if (from !== "system") {
      var meta = make("div", "chat-meta");
      meta.appendChild(make("span", "chat-name", m.name || (from === "visitor" ? nameOf(currentSummary()) : "")));
      var time = make("time", "chat-time", timeText(m.at));
      if (m.at) { time.setAttribute("datetime", m.at); }
      meta.appendChild(time);
      li.appendChild(meta);
    }
    if (m.body) { li.appendChild(make("div", "chat-body", m.body)); }
    if (from === "system" && m.at) {
      var t = make("time", "chat-time", timeText(m.at));
      t.setAttribute("datetime", m.at);
      li.appendChild(t);
    }
    var a = m.attachment;
    if (a && typeof a === "object") {
      var url = safeUrl(a.url, a.id != null ? "/chat/files/" + encodeURIComponent(a.id) : null);
      if (url) {
        var box = make("div", "chat-attachment");
        var link = make("a");
        link.href = url;
        link.target = "_blank";
        link.rel = "noopener";
        if (/^image\//.test(a.content_type || "")) {
          var img = make("img");
          img.src = url;
          img.alt = a.filename || "";
          img.loading = "lazy";
          link.appendChild(img);
        } else {
          link.textContent = msg("attachment", { name: a.filename || url });
          if (a.size) {
            box.appendChild(link);
            box.appendChild(make("span", "muted", " (" + Math.max(1, Math.round(a.size / 1024)) + " KB)"));
            li.appendChild(box);
            return li;
          }
        }
        box.appendChild(link);
        li.appendChild(box);
      }
    }
    return li;
  }

  function insertMessage(m) {
    if (el.messages.querySelector('.chat-msg[data-seq="' + m.seq + '"]')) { return; }
    var stick = nearBottom();
    var node = buildMessage(m), before = null;
    for (var i = 0; i < el.messages.children.length; i++) {
      var child = el.messages.children[i];
      var seq = child.getAttribute("data-seq");
      if (seq === null || parseInt(seq, 10) > m.seq) { before = child; break; }
    }
    el.messages.insertBefore(node, before);
    if (stick) { scrollToEnd(); }
  }

  // Store a message once per seq; true when it is new.
  function addMessage(conv, m) {
    var seq = typeof m.seq === "string" ? parseInt(m.seq, 10) : m.seq;
    if (typeof seq !== "number" || isNaN(seq) || conv.messages[seq]) { return false; }
    m.seq = seq;
    conv.messages[seq] = m;
    if (seq > conv.maxSeq) { conv.maxSeq = seq; }
    if (conv.id === current) { insertMessage(m); }
    return true;
  }

  function renderMessages() {
    el.messages.textContent = "";
    var conv = current !== null ? convs[current] : null;
    if (!conv) { return; }
    Object.keys(conv.messages).map(Number).sort(function (a, b) { return a - b; }).forEach(function (seq) {
      el.messages.appendChild(buildMessage(conv.messages[seq]));
    });
    values(pending).forEach(function (p) { if (p.conversation === current) { el.messages.appendChild(buildPending(p)); } });
    scrollToEnd();
  }

  var typingTimer = null;
  function showTyping(on) {
    clearTimeout(typingTimer);
    el.typing.hidden = !on;
    if (on) { typingTimer = setTimeout(function () { el.typing.hidden = true; }, 8000); }
  }

  // -- reading -------------------------------------------------------------------------------
  function viewVisible() { return current !== null && !collapsed && !document.hidden; }

  var readTimer = null;
  function scheduleRead() { clearTimeout(readTimer); readTimer = setTimeout(markRead, 300); }
  function markRead() {
    if (!viewVisible()) { return; }
    var id = current, conv = convs[id], s = mine[id];
    if (!conv || !s || s.agent_id !== me) { return; }
    var seq = conv.maxSeq;
    if (!seq) { return; }
    var base = Math.max(conv.readSent || 0, s.agent_read_seq || 0);
    var fresh = false;
    for (var k in conv.messages) {
      if (+k > base && conv.messages[k].from === "visitor") { fresh = true; break; }
    }
    if (!fresh && !s.unread) { return; }
    conv.readSent = seq;
    touch(id);
    s.unread = 0;
    s.agent_read_seq = Math.max(s.agent_read_seq || 0, seq);
    if (isLive()) {
      frame({ type: "chat_read", conversation: id, seq: seq });
    } else {
      api("POST", "/api/chats/" + id + "/read", { seq: seq }).catch(function () { conv.readSent = 0; });
    }
    renderMine();
    renderToggle();
  }

  // -- sending -------------------------------------------------------------------------------
  function pendingNode(clientId) {
    var nodes = el.messages.querySelectorAll(".chat-msg.pending");
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute("data-client-id") === clientId) { return nodes[i]; }
    }
    return null;
  }
  function buildPending(p) {
    var li = make("li", "chat-msg from-agent pending");
    li.setAttribute("data-client-id", p.id);
    li.appendChild(make("div", "chat-body", p.body));
    li.appendChild(make("div", "chat-status"));
    updatePending(p, li);
    return li;
  }
  function updatePending(p, node) {
    node = node || pendingNode(p.id);
    if (!node) { return; }
    node.classList.toggle("failed", !!p.failed);
    var status = node.querySelector(".chat-status");
    status.textContent = p.failed ? msg("failed", { error: p.error || "" }) : msg("sending");
    if (p.failed) {
      var retry = make("button", "chat-retry link", msg("retry"));
      retry.type = "button";
      retry.setAttribute("data-client-id", p.id);
      status.appendChild(document.createTextNode(" "));
      status.appendChild(retry);
    }
  }

  function sendComposer() {
    var s = currentSummary();
    if (!canReply(s)) { return; }
    var text = el.input.value;
    if (!text.trim()) { return; }
    if (text.length > MAX_CHARS) { composeError(msg("too-long", { n: MAX_CHARS })); return; }
    composeError("");
    var p = { id: randomId(), conversation: current, body: text, timer: null, posting: false, failed: false };
    pending[p.id] = p;
    el.input.value = "";
    store("session", STORE_DRAFT + current, null);
    stopTyping();
    hideHint();
    el.messages.appendChild(buildPending(p));
    scrollToEnd();
    dispatchSend(p);
  }

  function dispatchSend(p) {
    p.failed = false;
    updatePending(p);
    if (isLive()) {
      frame({ type: "chat_send", conversation: p.conversation, client_id: p.id, body: p.body });
      clearTimeout(p.timer);
      p.timer = setTimeout(function () { postSend(p); }, ACK_TIMEOUT);
    } else {
      postSend(p);
    }
  }

  // The HTTP fallback; the same client_id makes a resend a no-op on the server.
  function postSend(p) {
    clearTimeout(p.timer);
    p.timer = null;
    if (!pending[p.id] || p.posting) { return; }
    p.posting = true;
    api("POST", "/api/chats/" + p.conversation + "/messages", { body: p.body, client_id: p.id }).then(function (data) {
      p.posting = false;
      var seq = data && data.seq;
      if (typeof seq === "number") { confirmSent(p.id, seq, null); }
    }, function (err) {
      p.posting = false;
      if (!pending[p.id]) { return; }
      p.failed = true;
      p.error = err.message;
      updatePending(p);
    });
  }

  function confirmSent(clientId, seq, message) {
    var p = pending[clientId];
    if (!p) { return; }
    clearTimeout(p.timer);
    delete pending[clientId];
    var node = pendingNode(clientId);
    var conv = convs[p.conversation];
    var m = message || {
      conversation: p.conversation, seq: seq, from: "agent", name: meName, body: p.body,
      client_id: clientId, attachment: null, at: new Date().toISOString()
    };
    if (conv && typeof seq === "number") { addMessage(conv, m); }
    if (node) { node.remove(); }
    var s = mine[p.conversation];
    if (s && typeof seq === "number") {
      if (seq > (s.seq || 0)) { s.seq = seq; }
      s.preview = previewOf(m);
      s.last_message_at = m.at;
      renderMine();
    }
  }

  function composeError(text) {
    el.composeError.textContent = text;
    el.composeError.hidden = !text;
  }

  // Typing: at most one on:true per 2 s while typing, on:false after 3 s idle.
  var typingSentAt = 0, typingOn = null, typingIdle = null;
  function noteTyping() {
    var s = currentSummary();
    if (!canReply(s)) { return; }
    if (!el.input.value.trim()) { stopTyping(); return; }
    var now = Date.now();
    if (typingOn !== current || now - typingSentAt >= TYPING_EVERY) {
      if (typingOn !== null && typingOn !== current) { stopTyping(); }
      frame({ type: "chat_typing", conversation: current, on: true });
      typingSentAt = now;
      typingOn = current;
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, TYPING_IDLE);
  }
  function stopTyping() {
    clearTimeout(typingIdle);
    if (typingOn !== null) {
      frame({ type: "chat_typing", conversation: typingOn, on: false });
      typingOn = null;
      typingSentAt = 0;
    }
  }

  function saveDraft() {
    if (current === null) { return; }
    store("session", STORE_DRAFT + current, el.input.value ? el.input.value : null);
  }

  // Put text into the composer at the cursor, replacing the selection (or [start, end)).
  function insertText(text, start, end, spaced) {
    var box = el.input;
    if (box.disabled) { return; }
    if (start == null) { start = box.selectionStart; end = box.selectionEnd; }
    if (spaced) {
      var before = box.value.slice(0, start), after = box.value.slice(end);
      text = (before && !/\s$/.test(before) ? " " : "") + text + (after && !/^\s/.test(after) ? " " : "");
    }
    box.setRangeText(text, start, end, "end");
    box.focus();
    saveDraft();
    noteTyping();
  }

  // -- canned responses ----------------------------------------------------------------------
  function cannedLang() {
    var s = currentSummary();
    return (s && s.visitor && s.visitor.language) || (s && s.language) || uiLang || "";
  }
  function cannedItems() {
    var items = canned[cannedLang()];
    return Array.isArray(items) ? items : [];
  }
  function loadCanned() {
    var lang = cannedLang();
    if (Array.isArray(canned[lang])) { renderCanned(); return; }
    if (canned[lang]) { return; }
    canned[lang] = api("GET", "/api/canned-responses?lang=" + encodeURIComponent(lang)).then(function (data) {
      canned[lang] = (data && data.items) || [];
      renderCanned();
    }, function () {
      canned[lang] = [];
      renderCanned();
    });
  }
  function renderCanned() {
    var items = cannedItems();
    while (el.canned.options.length > 1) { el.canned.remove(1); }
    if (!items.length) {
      var none = new Option(msg("no-canned"), "");
      none.disabled = true;
      el.canned.add(none);
      return;
    }
    items.forEach(function (item, index) {
      var label = (item.title || item.shortcut || "") + (item.shortcut ? "  /" + item.shortcut : "");
      el.canned.add(new Option(label, String(index)));
    });
  }
  function expandCanned(item) {
    var name = nameOf(currentSummary());
    return String(item.body || "").replace(/\{name\}/g, name);
  }
  // "/" + shortcut at the start of the composer (before the cursor).
  function slashQuery() {
    var before = el.input.value.slice(0, el.input.selectionStart);
    var m = /^\/(\S*)$/.exec(before);
    return m ? m[1] : null;
  }
  function slashMatches(q) {
    q = (q || "").toLowerCase();
    return cannedItems().filter(function (item) {
      return item.shortcut && String(item.shortcut).toLowerCase().indexOf(q) === 0;
    });
  }
  function hideHint() { el.hint.hidden = true; el.hint.textContent = ""; }
  function renderHint() {
    var q = slashQuery();
    if (q === null) { hideHint(); return; }
    var matches = slashMatches(q).slice(0, 6);
    if (!matches.length) { hideHint(); return; }
    el.hint.textContent = "";
    matches.forEach(function (item) {
      var button = make("button", "chat-canned-choice");
      button.type = "button";
      button.setAttribute("data-canned-index", String(cannedItems().indexOf(item)));
      button.appendChild(make("kbd", null, "/" + item.shortcut));
      button.appendChild(document.createTextNode(" " + (item.title || "")));
      el.hint.appendChild(button);
    });
    el.hint.hidden = false;
  }
  function useSlash(item) {
    insertText(expandCanned(item), 0, el.input.selectionStart, false);
    hideHint();
  }
  function slashPick(q) {
    var matches = slashMatches(q);
    if (!matches.length) { return null; }
    for (var i = 0; i < matches.length; i++) {
      if (String(matches[i].shortcut).toLowerCase() === q.toLowerCase()) { return matches[i]; }
    }
    return matches[0];
  }

  // -- knowledge base links ------------------------------------------------------------------
  // The public search: ranked, and only what a visitor can open (published, public), each with
  // its public address. If it is rate-limited (it counts per client address), the staff list
  // of published public articles by title stands in.
  var kbTimer = null, kbTurn = 0;
  function searchKb() {
    var q = el.kbQ.value.trim();
    var turn = ++kbTurn;
    if (q.length < 2) { el.kbResults.textContent = ""; return; }
    api("GET", "/api/kb/search?limit=5&q=" + encodeURIComponent(q)).then(function (data) {
      return ((data && data.results) || []).map(function (r) { return { title: r.title, url: r.url, language: r.language }; });
    }).catch(function (err) {
      if (err.status !== 429) { throw err; }
      return api("GET", "/api/kb/articles?status=published&visibility=public&limit=5&q=" + encodeURIComponent(q)).then(function (data) {
        return ((data && data.items) || []).filter(function (a) { return a.url; })
          .map(function (a) { return { title: a.title, url: a.url, language: a.language }; });
      });
    }).then(function (results) {
      if (turn !== kbTurn) { return; }
      el.kbResults.textContent = "";
      if (!results.length) { el.kbResults.appendChild(make("li", "empty", msg("no-articles"))); return; }
      results.forEach(function (r) {
        var li = make("li");
        var button = make("button", "chat-kb-insert link", r.title || r.url);
        button.type = "button";
        button.setAttribute("data-kb-url", r.url);
        button.title = r.url;
        li.appendChild(button);
        if (r.language) { li.appendChild(make("span", "muted", " " + r.language)); }
        el.kbResults.appendChild(li);
      });
    }, function (err) {
      if (turn !== kbTurn) { return; }
      el.kbResults.textContent = "";
      el.kbResults.appendChild(make("li", "error", msg("error", { error: err.message })));
    });
  }

  // -- transfer ------------------------------------------------------------------------------
  function loadAgents(force) {
    if (!force && agents && Date.now() - agentsAt < 30000) { renderTransferOptions(); return; }
    if (loadAgents.busy) { return; }
    loadAgents.busy = true;
    api("GET", "/api/presence").then(function (data) {
      agents = (data && data.items) || [];
      agentsAt = Date.now();
      return api("GET", "/api/teams").then(function (t) {
        ((t && t.items) || []).forEach(function (team) { teams[team.id] = team.name; });
      }, function () { /* teams learnt from summaries are still offered */ });
    }).then(function () { renderTransferOptions(); }, function () { /* the select keeps what it had */ })
      .then(function () { loadAgents.busy = false; });
  }
  function statusLabel(status) {
    var option = document.querySelector('#presence option[value="' + status + '"]');
    return option ? option.textContent : status;
  }
  function renderTransferOptions() {
    var select = el.transferTo, keep = select.value;
    while (select.children.length > 1) { select.removeChild(select.lastChild); }
    var s = currentSummary();
    var order = { available: 0, busy: 1, away: 2, offline: 3 };
    var people = (agents || []).filter(function (a) { return a.user_id !== me && (!s || a.user_id !== s.agent_id); })
      .sort(function (a, b) {
        return ((order[a.status] != null ? order[a.status] : 9) - (order[b.status] != null ? order[b.status] : 9)) ||
          String(a.name).localeCompare(String(b.name));
      });
    if (people.length) {
      var group = make("optgroup");
      group.label = msg("agents");
      people.forEach(function (a) {
        var option = new Option(msg("agent-option", {
          name: a.name, status: statusLabel(a.status), chats: a.active_chats != null ? a.active_chats : 0,
          capacity: a.chat_capacity != null ? a.chat_capacity : "?"
        }), "agent:" + a.user_id);
        option.setAttribute("data-status", a.status || "");
        group.appendChild(option);
      });
      select.appendChild(group);
    }
    var teamIds = Object.keys(teams);
    if (teamIds.length) {
      var tgroup = make("optgroup");
      tgroup.label = msg("teams");
      teamIds.sort(function (a, b) { return String(teams[a]).localeCompare(String(teams[b])); }).forEach(function (tid) {
        tgroup.appendChild(new Option(msg("team-option", { name: teams[tid] }), "team:" + tid));
      });
      select.appendChild(tgroup);
    }
    if (keep && select.querySelector('option[value="' + keep + '"]')) { select.value = keep; }
  }

  function transfer(target) {
    var id = current, s = currentSummary();
    var m = /^(agent|team):(\d+)$/.exec(target || "");
    if (!s || !m) { return; }
    var payload = m[1] === "agent" ? { agent_id: parseInt(m[2], 10) } : { team_id: parseInt(m[2], 10) };
    leaving[id] = true;
    renderHeader();
    api("POST", "/api/chats/" + id + "/transfer", payload).then(function (data) {
      notice(msg("transferred"));
      el.transferTo.value = "";
      if (data && idOf(data) === id && data.state) {
        applySummary(data, { quiet: true });
      } else if (!(payload.agent_id === me)) {
        applySummary({ id: id, state: payload.team_id ? "queued" : "active", agent_id: payload.agent_id || null }, { quiet: true });
      }
      agentsAt = 0;
    }, function (err) {
      notice(msg("error", { error: err.message }), "error");
    }).then(function () {
      delete leaving[id];
      if (id === current) { renderHeader(); }
    });
  }

  function closeChat() {
    var id = current, s = currentSummary();
    if (!s || ENDED[s.state]) { return; }
    if (!window.confirm(msg("confirm-close", { name: nameOf(s) }))) { return; }
    leaving[id] = true;
    renderHeader();
    api("POST", "/api/chats/" + id + "/close", {}).then(function (data) {
      applySummary(data && idOf(data) === id && data.state ? data : { id: id, state: "closed" }, { quiet: true });
    }, function (err) {
      notice(msg("error", { error: err.message }), "error");
    }).then(function () {
      delete leaving[id];
      if (id === current) { renderHeader(); }
    });
  }

  // -- accepting -----------------------------------------------------------------------------
  function accept(id) {
    var o = offers[id];
    if (!o || accepting[id]) { return; }
    accepting[id] = true;
    renderOffers();
    api("POST", "/api/chats/" + id + "/accept", {}).then(function (data) {
      delete offers[id];
      var summary = merge(merge({}, o.summary), data && idOf(data) === id ? data : {});
      if (!summary.state || summary.state === "offered" || summary.state === "queued") { summary.state = "active"; }
      if (summary.agent_id == null) { summary.agent_id = me; }
      applySummary(summary, { quiet: true });
      delete accepting[id];
      openChat(id, { focus: true });
    }, function (err) {
      delete accepting[id];
      if (err.status === 409) {
        touch(id);
        delete offers[id];
        notice(msg("offer-lapsed") + (err.serverMessage ? " " + err.serverMessage : ""), "error");
      } else {
        notice(msg("error", { error: err.message }), "error");
      }
      renderLists();
    });
  }

  // -- socket events -------------------------------------------------------------------------
  function onOffered(ev) {
    var s = ev.conversation && typeof ev.conversation === "object" ? ev.conversation : null;
    if (!s || idOf(s) === null) { scheduleReload(); return; }
    rememberTeam(s);
    touch(s.id);
    offers[s.id] = { summary: s, expiresAt: parseTime(ev.expires_at || s.offer_expires_at || s.expires_at) };
    renderLists();
    notice(msg("new-offer", { name: nameOf(s) }));
    cue();
    if (collapsed) { setCollapsed(false, false); }  // an offer lapses in seconds: show it
  }

  function onWithdrawn(ev) {
    var id = idOf(ev.conversation);
    if (id === null || !offers[id] || accepting[id]) { return; }
    touch(id);
    delete offers[id];
    renderLists();
  }

  function onMessage(ev) {
    var id = idOf(ev.conversation);
    if (id === null) { return; }
    if (ev.client_id && pending[ev.client_id]) { confirmSent(ev.client_id, ev.seq, ev); }
    var conv = convs[id];
    if (conv) { addMessage(conv, ev); }
    var s = mine[id];
    if (s) {
      if (ev.case_id && !s.case_id) { s.case_id = ev.case_id; }
      if (!(ev.seq > (s.seq || 0))) { return; }  // already counted
      touch(id);
      s.seq = ev.seq;
      s.preview = previewOf(ev);
      s.last_message_at = ev.at;
      if (ev.from === "visitor") {
        if (id === current) { showTyping(false); }
        if (id === current && viewVisible()) {
          scheduleRead();
        } else {
          s.unread = (s.unread || 0) + 1;
          if (id !== current || collapsed) { notice(msg("new-message", { name: nameOf(s) })); }
          cue();
        }
      }
      renderMine();
      renderToggle();
    } else if (offers[id]) {
      offers[id].summary.preview = previewOf(ev);
      renderOffers();
    } else if (!conv && !watched) {
      scheduleReload();  // a chat of mine this tab has not heard of yet
    }
  }

  function onTyping(ev) {
    if (idOf(ev.conversation) !== current || ev.from === "agent") { return; }
    showTyping(!!ev.on);
  }

  function onState(ev) {
    // Staff get the conversation's summary. A watcher of "chat:ID" also gets the visitor's
    // version of the frame (an id, no agent_id), which says nothing the summary does not.
    if (!ev.conversation || typeof ev.conversation !== "object") { return; }
    var s = merge({}, ev.conversation);
    if (ev.state) { s.state = ev.state; }
    applySummary(s, { by: ev.by });
  }

  function onAck(ev) {
    if (ev.client_id) { confirmSent(ev.client_id, ev.seq, null); }
  }

  function onError(ev) {
    if (!ev || ev.ref !== "chat_send") { return; }  // chat_typing / chat_read / watch: nothing to do
    var stuck = values(pending).filter(function (p) {
      return !p.failed && (!ev.client_id || p.id === ev.client_id);
    });
    if (!stuck.length) { if (ev.message) { notice(msg("error", { error: ev.message }), "error"); } return; }
    stuck.forEach(postSend);  // the HTTP answer says what is wrong, message by message
  }

  body.addEventListener("desk:chat_offered", function (e) { onOffered(e.detail || {}); });
  body.addEventListener("desk:chat_offer_withdrawn", function (e) { onWithdrawn(e.detail || {}); });
  body.addEventListener("desk:chat_message", function (e) { onMessage(e.detail || {}); });
  body.addEventListener("desk:chat_typing", function (e) { onTyping(e.detail || {}); });
  body.addEventListener("desk:chat_state", function (e) { onState(e.detail || {}); });
  body.addEventListener("desk:chat_ack", function (e) { onAck(e.detail || {}); });
  body.addEventListener("desk:error", function (e) { onError(e.detail); });
  // Every (re)connect: whatever happened while the socket was down is read back.
  body.addEventListener("desk:connected", function () {
    loadChats();
    if (current !== null) {
      loadConversation(current);
      if (watched) { frame({ type: "watch", topics: [watched] }); }
    }
  });

  // -- the panel's own controls ------------------------------------------------------------
  el.toggle.addEventListener("click", function () { setCollapsed(!collapsed, true); });
  el.viewHide.addEventListener("click", hideView);

  panel.addEventListener("click", function (event) {
    var target = event.target;
    if (!target.closest) { return; }
    var button = target.closest("button.chat-accept");
    if (button) {
      var offer = button.closest("[data-chat-offer]");
      if (offer) { accept(parseInt(offer.getAttribute("data-chat-offer"), 10)); }
      return;
    }
    button = target.closest("button.chat-open");
    if (button) {
      var item = button.closest("[data-chat]") || button.closest("[data-chat-waiting]");
      var id = parseInt(item.getAttribute("data-chat") || item.getAttribute("data-chat-waiting"), 10);
      openChat(id, { focus: !!mine[id] });
      return;
    }
    button = target.closest("button.chat-retry");
    if (button) {
      var p = pending[button.getAttribute("data-client-id")];
      if (p) { dispatchSend(p); }
      return;
    }
    button = target.closest("button.chat-canned-choice");
    if (button) {
      var choice = cannedItems()[parseInt(button.getAttribute("data-canned-index"), 10)];
      if (choice) { useSlash(choice); }
      return;
    }
    button = target.closest("button.chat-kb-insert");
    if (button) {
      insertText(button.getAttribute("data-kb-url"), null, null, true);
    }
  });

  el.composer.addEventListener("submit", function (event) {
    event.preventDefault();
    sendComposer();
  });
  el.input.addEventListener("keydown", function (event) {
    if (event.isComposing || event.keyCode === 229) { return; }  // an IME is still composing
    if (!el.hint.hidden && (event.key === "Tab" || (event.key === "Enter" && !event.shiftKey))) {
      var q = slashQuery();
      var item = q !== null ? slashPick(q) : null;
      if (item) { event.preventDefault(); useSlash(item); return; }
    }
    if (event.key === "Escape" && !el.hint.hidden) { event.preventDefault(); hideHint(); return; }
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      sendComposer();
    }
  });
  el.input.addEventListener("input", function () {
    // "/shortcut " (with the space) at the start expands at once.
    var before = el.input.value.slice(0, el.input.selectionStart);
    var m = /^\/(\S+) $/.exec(before);
    if (m) {
      var exact = cannedItems().filter(function (item) {
        return item.shortcut && String(item.shortcut).toLowerCase() === m[1].toLowerCase();
      })[0];
      if (exact) { useSlash(exact); return; }
    }
    renderHint();
    saveDraft();
    noteTyping();
    if (el.composeError.textContent && el.input.value.length <= MAX_CHARS) { composeError(""); }
  });
  el.input.addEventListener("blur", function () { saveDraft(); });
  el.canned.addEventListener("change", function () {
    var item = cannedItems()[parseInt(el.canned.value, 10)];
    el.canned.value = "";
    if (item) { insertText(expandCanned(item), null, null, false); }
  });
  el.kbQ.addEventListener("input", function () {
    clearTimeout(kbTimer);
    kbTimer = setTimeout(searchKb, 350);
  });
  el.kbQ.addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); clearTimeout(kbTimer); searchKb(); }
  });
  el.transferTo.addEventListener("focus", function () { loadAgents(false); });
  el.transferTo.addEventListener("mousedown", function () { loadAgents(false); });
  el.transfer.addEventListener("submit", function (event) {
    event.preventDefault();
    transfer(el.transferTo.value);
  });
  el.close.addEventListener("click", closeChat);

  // -- keyboard shortcuts: c (panel), a (accept the oldest offer), Alt+Up/Down (switch chats) --
  function switchChat(step) {
    var list = sortedMine();
    if (!list.length) { return; }
    var index = -1;
    for (var i = 0; i < list.length; i++) { if (list[i].id === current) { index = i; break; } }
    var next = index === -1 ? (step > 0 ? 0 : list.length - 1) : (index + step + list.length) % list.length;
    openChat(list[next].id, {});
  }
  var lastG = 0;
  document.addEventListener("keydown", function (event) {
    var target = event.target || {};
    var tag = target.tagName || "";
    if (/INPUT|TEXTAREA|SELECT/.test(tag) || target.isContentEditable) { return; }
    if (event.ctrlKey || event.metaKey || document.querySelector("dialog[open]")) { return; }
    if (event.altKey) {
      if (!event.shiftKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
        event.preventDefault();
        switchChat(event.key === "ArrowUp" ? -1 : 1);
      }
      return;
    }
    if (event.key === "g") { lastG = Date.now(); return; }
    if (Date.now() - lastG < 1500) { lastG = 0; return; }  // "g c" goes to the cases (desk.js)
    if (event.key === "c") {
      event.preventDefault();
      setCollapsed(!collapsed, true);
    } else if (event.key === "a") {
      var first = sortedOffers()[0];
      if (first) { event.preventDefault(); accept(first.summary.id); }
    }
  });

  document.addEventListener("visibilitychange", function () { if (!document.hidden) { scheduleRead(); } });
  window.addEventListener("focus", function () { scheduleRead(); });
  window.addEventListener("pagehide", saveDraft);

  // The panel starts under the top bar and climbs to the top as the bar scrolls away.
  var topbar = document.querySelector(".topbar");
  var placing = false;
  function place() {
    placing = false;
    var top = topbar ? Math.max(0, Math.round(topbar.getBoundingClientRect().bottom)) : 0;
    panel.style.setProperty("--chats-top", top + "px");
  }
  function schedulePlace() {
    if (!placing) { placing = true; window.requestAnimationFrame(place); }
  }
  window.addEventListener("scroll", schedulePlace, { passive: true });
  window.addEventListener("resize", schedulePlace);

  // -- start ---------------------------------------------------------------------------------
  place();
  setCollapsed(store("local", STORE_COLLAPSED) === "1", false);
  renderLists();
  setInterval(function () { tick(); sweepOffers(); }, 1000);
  setInterval(function () { if (!document.hidden && loaded) { loadChats(); } }, REFRESH_EVERY);
  // The first load waits for the socket (desk:connected), so no event falls between the
  // two; without a socket after 3 s, load anyway.
  if (isLive()) { loadChats(); }
  setTimeout(function () { if (!loaded && !loading) { loadChats(); } }, 3000);
  var reopen = parseInt(store("session", STORE_CURRENT) || "", 10);
  if (!isNaN(reopen)) { openChat(reopen, { quiet: true, keepCollapsed: true }); }
})();
