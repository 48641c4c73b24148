/* Live status: pages that name a stream (`data-live-stream="URL"` on <main>) learn of changes
 * through server-sent events, without polling.
 *
 * window.cisLive.subscribe(url, onChange, onOpen) opens an EventSource, calls onOpen() each time
 * it is connected and onChange() on each `change` event. Where EventSource is missing, or the stream keeps failing (a proxy that buffers,
 * a refused stream), it calls onChange() every FALLBACK_SECONDS instead while the tab is visible.
 *
 * On its own, for a page with `[data-live-region]` elements (the order page): on each change it
 * fetches the page again and replaces each region by the element with the same id in the answer,
 * except while focus is inside the region (a button about to be pressed): then it waits until the
 * focus leaves. Listeners bound on the whole document (confirm-buttons.js) keep working; others
 * may listen for the "live:updated" event on document.
 */
(function () {
  "use strict";

  var FALLBACK_SECONDS = 15;
  var FAILURES_BEFORE_FALLBACK = 3;

  function subscribe(url, onChange, onOpen) {
    var failures = 0;
    var pollTimer = null;

    function poll() {
      if (pollTimer === null) {
        document.documentElement.setAttribute("data-live-mode", "poll");
        pollTimer = window.setInterval(function () {
          if (!document.hidden) {
            onChange("poll");
          }
        }, FALLBACK_SECONDS * 1000);
      }
    }

    if (!window.EventSource) {
      poll();
      return;
    }
    var source = new EventSource(url);
    source.addEventListener("open", function () {
      failures = 0;
      document.documentElement.setAttribute("data-live-mode", "stream");
      if (onOpen) {
        onOpen();
      }
    });
    source.addEventListener("change", function () {
      failures = 0;
      onChange("change");
    });
    source.addEventListener("error", function () {
      // A stream that ended (every few minutes) is reopened by the browser and opens again;
      // one refused (403, 404, not an event stream) is CLOSED; one that never opens keeps failing.
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= FAILURES_BEFORE_FALLBACK) {
        source.close();
        poll();
      }
    });
  }

  window.cisLive = { subscribe: subscribe };

  var main = document.querySelector("main[data-live-stream]");
  if (!main || !window.fetch || !window.DOMParser || !document.querySelector("[data-live-region][id]")) {
    return; // no stream, or a page that handles its stream itself (ops.js)
  }

  var inFlight = false;
  var again = false;
  var waiting = null; // the region whose focus holds an update back

  function focusInside(region) {
    var active = document.activeElement;
    return !!active && active !== document.body && region.contains(active);
  }

  function swap(fetched) {
    var regions = document.querySelectorAll("[data-live-region][id]");
    Array.prototype.forEach.call(regions, function (region) {
      var fresh = fetched.getElementById(region.id);
      if (!fresh) {
        return;
      }
      if (focusInside(region)) {
        waiting = region;
        return;
      }
      region.replaceWith(document.importNode(fresh, true));
    });
    document.documentElement.setAttribute("data-live-updated", String(Date.now()));
    document.dispatchEvent(new CustomEvent("live:updated"));
  }

  function refresh() {
    if (inFlight) {
      again = true; // one more look once this one is in: the change may have come after it
      return;
    }
    inFlight = true;
    waiting = null;
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Requested-With": "fetch" },
    })
      .then(function (response) {
        // A redirect (a login page) or an error page: leave the page as it is.
        var sameUrl = new URL(response.url).pathname === window.location.pathname;
        return response.ok && sameUrl ? response.text() : null;
      })
      .then(function (html) {
        if (html) {
          swap(new DOMParser().parseFromString(html, "text/html"));
        }
      })
      .catch(function () {
        // No answer: the next change (or the fallback poll) looks again.
      })
      .then(function () {
        inFlight = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  document.addEventListener("focusout", function (event) {
    // The focus left a region that held an update back: update now (unless it moved within it).
    if (waiting && waiting.contains(event.target) && !waiting.contains(event.relatedTarget)) {
      refresh();
    }
  });

  subscribe(main.getAttribute("data-live-stream"), refresh);
})();
