// The supervisor's wall board, live: one socket to /ws/agent (session cookie), as desk.js
// opens it, and a re-fetch of the board's region whenever an event says something it shows
// may have changed. htmx also re-fetches every 15 s, so waits and timers keep moving.
// No inline scripts or styles anywhere (the CSP forbids them).
(function () {
  "use strict";
  var body = document.body;
  if (!body || !body.getAttribute("data-user-id")) { return; }

  // Times are rendered by the server in the viewer's timezone: tell it ours (as desk.js).
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var current = (document.cookie.match(/(?:^|;\s*)helpdesk_tz=([^;]*)/) || [])[1];
    if (tz && /^[A-Za-z0-9_+\-\/]+$/.test(tz) && current !== tz) {
      document.cookie = "helpdesk_tz=" + tz + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) { /* the server's default zone is used */ }

  // What the hub sends a supervisor that can change a figure on the board: SLA clocks
  // (topic "sla"), cases (topic "queue"), and, by role, chats, calls and presence.
  var RELEVANT = {
    sla_warning: true, sla_breach: true, case_updated: true, chat_state: true,
    call_update: true, presence: true, resync: true
  };
  var TOPICS = ["sla", "queue"];
  var MIN_INTERVAL = 1000;  // at most one re-fetch a second, however many events arrive
  var live = document.getElementById("live-status");
  var socket = null, backoff = 1000, everConnected = false;
  var lastRefresh = 0, timer = null;

  function refresh() {
    if (timer) { return; }  // one already scheduled covers this event too
    var wait = Math.max(150, lastRefresh + MIN_INTERVAL - Date.now());
    timer = setTimeout(function () {
      timer = null;
      lastRefresh = Date.now();
      if (window.htmx) { window.htmx.trigger(body, "board-refresh"); }
    }, wait);
  }

  function setLive(state) { if (live) { live.setAttribute("data-state", state); } }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(frame)); }
  }

  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent";
    setLive("connecting");
    socket = new WebSocket(url);
    socket.onopen = function () {
      backoff = 1000;
      send({ type: "watch", topics: TOPICS });
    };
    socket.onmessage = function (msg) {
      var ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (ev.type === "hello") {
        setLive("live");
        if (everConnected) { refresh(); }  // events may have been missed while away
        everConnected = true;
      } else if (ev.type === "ping") {
        send({ type: "pong" });
      } else if (RELEVANT[ev.type]) {
        refresh();
      }
    };
    socket.onclose = function (event) {
      setLive("offline");
      if (event.code === 4401) {  // signed out or expired: back to the login form
        location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
        return;
      }
      if (event.code === 4403) { return; }
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
  }

  if (window.WebSocket) { connect(); }
})();
