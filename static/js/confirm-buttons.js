/*
 * A submit button with a data-confirm="question" attribute asks before it submits (the admin's
 * order actions that move money). A file rather than an inline onclick: the
 * Content-Security-Policy runs no inline script.
 */
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-confirm], input[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) {
      event.preventDefault();
    }
  });
})();
