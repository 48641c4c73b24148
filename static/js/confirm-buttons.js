/*
 * Confirmation before what moves money or cannot be undone. A file rather than an inline
 * onclick: the Content-Security-Policy runs no inline script.
 *
 * - A button (or submit input) with data-confirm="question" asks before it submits.
 * - A submit button of a form with a <select name="action"> (an admin list's actions; another
 *   name with data-confirm-option="name") asks the data-confirm question of the option chosen
 *   there, when it has one.
 */
(function () {
  "use strict";

  function question(button) {
    if (button.dataset.confirm) {
      return button.dataset.confirm;
    }
    var form = button.type === "submit" ? button.form : null;
    var select = form && form.elements.namedItem(button.dataset.confirmOption || "action");
    if (!select || select.tagName !== "SELECT") {
      return "";
    }
    var option = select.options[select.selectedIndex];
    return option && option.dataset.confirm ? option.dataset.confirm : "";
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button, input");
    if (!button) {
      return;
    }
    var text = question(button);
    if (text && !window.confirm(text)) {
      event.preventDefault();
    }
  });
})();
