/* The operators' page refreshes its live part: every few seconds it fetches `?fragment=1` and
 * puts the answer in #ops-live. It waits while the tab is hidden, while someone is typing or has
 * focus inside the live part (a button about to be pressed), and after "Pause updates". It stops
 * when the answer is not the fragment (the session ended: a login page came back). */
(function () {
  "use strict";

  var live = document.getElementById("ops-live");
  if (!live || !window.fetch) {
    return;
  }
  var seconds = parseInt(live.getAttribute("data-refresh-seconds"), 10) || 15;
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

  function schedule() {
    window.clearTimeout(timer);
    if (!stopped && !paused && !document.hidden) {
      timer = window.setTimeout(refresh, seconds * 1000);
    }
  }

  function refresh() {
    if (stopped || paused || document.hidden || inFlight) {
      return;
    }
    if (busy()) {
      say("Update waiting while you type or use a control…");
      schedule();
      return;
    }
    inFlight = true;
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
        say("Updated at " + new Date().toISOString().slice(11, 19) + " UTC; next in " + seconds + " s.");
      })
      .catch(function () {
        say("The last update failed (no answer); trying again in " + seconds + " s.");
      })
      .then(function () {
        inFlight = false;
        schedule();
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

  schedule();
})();
