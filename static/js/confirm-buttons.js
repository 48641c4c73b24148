/*
 * Confirmation before what moves money or cannot be undone. A file rather than an inline
 * onclick: the Content-Security-Policy runs no inline script.
 *
 * - A button (or submit input) with data-confirm="question" asks before it submits.
 * - A button with data-confirm-option="name" asks the data-confirm question of the option
 *   chosen in its form's <select name="name"> (the admin list's actions), when it has one.
 */
(function () {
  "use strict";

  function question(button) {
    if (button.dataset.confirm) {
      return button.dataset.confirm;
    }
    var form = button.form;
    var select = form && form.elements.namedItem(button.dataset.confirmOption);
    var option = select && select.options ? select.options[select.selectedIndex] : null;
    return option && option.dataset.confirm ? option.dataset.confirm : "";
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest(
      "button[data-confirm], input[data-confirm], button[data-confirm-option], input[data-confirm-option]"
    );
    if (!button) {
      return;
    }
    var text = question(button);
    if (text && !window.confirm(text)) {
      event.preventDefault();
    }
  });
})();
