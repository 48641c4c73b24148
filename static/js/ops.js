/* The operators' page refreshes its live part: it fetches `?fragment=1` and puts the answer in
 * #ops-live when the `ops` stream (live.js, server-sent events) says something changed, at most
 * once a second, and every SLOW_POLL_SECONDS anyway (the "… ago" figures age); without the stream
 * (no EventSource, or it keeps failing) live.js calls it every 15 s instead. It waits while the
 * tab is hidden, while someone is typing or has focus inside the live part (a button about to be
 * pressed), and after "Pause updates". It stops when the answer is not the fragment (the session
 * ended: a login page came back). */
(function () {
  "use strict";

  var live = document.getElementById("ops-live");
  if (!live || !window.fetch) {
    return;
  }
  var seconds = parseInt(live.getAttribute("data-refresh-seconds"), 10) || 15;
  var main = document.querySelector("main[data-live-stream]");
  var streamed = !!(main && window.cisLive);
  var SLOW_POLL_SECONDS = 60;
  var MIN_GAP_MS = 500; // a burst of changes (a batch of deliveries) is one refresh
  var BUSY_RETRY_MS = 2000;
  var lastRefresh = 0;
  var changed = false; // a change came while an update was in flight, held back or paused

  var status = document.getElementById("ops-refresh-status");
  var toggle = document.getElementById("ops-refresh-toggle");
  var timer = null;
  var paused = false;
  var stopped = false;
  var inFlight = false;

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function busy() {
    var active = document.activeElement;
    if (!active || active === document.body) {
      return false;
    }
    if (active.matches("input, select, textarea")) {
      return true; // typing in the lookup or choosing a filter
    }
    return live.contains(active); // a button inside the part that would be replaced
  }

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.hash = "";
    url.searchParams.delete("order");
    url.searchParams.set("fragment", "1");
    return url.toString();
  }

  function schedule(delayMs) {
    window.clearTimeout(timer);
    if (!stopped && !paused && !document.hidden) {
      timer = window.setTimeout(refresh, delayMs === undefined ? seconds * 1000 : delayMs);
    }
  }

  function onChange() {
    changed = true;
    if (stopped || paused || document.hidden || inFlight) {
      return; // resuming, showing the tab or the update in flight looks again
    }
    schedule(Math.max(0, lastRefresh + MIN_GAP_MS - Date.now()));
  }

  function refresh() {
    if (stopped || paused || document.hidden || inFlight) {
      return;
    }
    if (busy()) {
      say("Update waiting while you type or use a control…");
      schedule(changed ? BUSY_RETRY_MS : undefined);
      return;
    }
    inFlight = true;
    changed = false;
    lastRefresh = Date.now();
    fetch(fragmentUrl(), {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Requested-With": "fetch" },
    })
      .then(function (response) {
        if (response.ok && response.headers.get("X-Ops-Fragment") !== "1") {
          stopped = true;
          say("Updates stopped: your session ended. Reload the page to sign in again.");
          return null;
        }
        if (!response.ok) {
          say("The last update failed (HTTP " + response.status + "); trying again in " + seconds + " s.");
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) {
          return;
        }
        if (busy()) {
          changed = true;
          say("Update waiting while you type or use a control…");
          return;
        }
        // Sections someone opened stay open.
        var open = Array.prototype.map.call(live.querySelectorAll("details[open][id]"), function (el) {
          return el.id;
        });
        live.innerHTML = html;
        open.forEach(function (id) {
          var details = document.getElementById(id);
          if (details) {
            details.open = true;
          }
        });
        live.setAttribute("data-updated", String(Date.now()));
        say(
          "Updated at " +
            new Date().toISOString().slice(11, 19) +
            " UTC; " +
            (seconds >= SLOW_POLL_SECONDS ? "live." : "next in " + seconds + " s.")
        );
      })
      .catch(function () {
        say("The last update failed (no answer); trying again in " + seconds + " s.");
      })
      .then(function () {
        inFlight = false;
        if (stopped) {
          return;
        }
        if (changed) {
          schedule(busy() ? BUSY_RETRY_MS : MIN_GAP_MS);
        } else {
          schedule();
        }
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearTimeout(timer);
    } else {
      refresh(); // figures may be old after a while away
    }
  });

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume updates" : "Pause updates";
      if (paused) {
        window.clearTimeout(timer);
        say("Updates paused.");
      } else {
        refresh();
      }
    });
  }

  if (streamed) {
    window.cisLive.subscribe(main.getAttribute("data-live-stream"), onChange, function () {
      // Connected: changes come as they happen; the poll only ages the "… ago" figures.
      // (A change between the page and the stream is sent at once: the page names its version.)
      if (seconds < SLOW_POLL_SECONDS) {
        seconds = SLOW_POLL_SECONDS;
        if (!inFlight) {
          schedule();
        }
      }
    });
  }
  schedule();
})();
