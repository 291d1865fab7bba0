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
