/*
 * The payment page (templates/payments/pay.html). Card details go from this page to Stripe only:
 *
 *   1. POST {setup-url}    → a SetupIntent client secret from our server;
 *   2. stripe.confirmCardSetup(secret, {payment_method: {card}}) → a payment method id (pm_...);
 *   3. POST {confirm-url}  {"payment_method": "pm_..."} → our server charges it;
 *   4. if the bank wants to check (3-D Secure): stripe.confirmCardPayment(secret), then
 *      POST {sync-url} so our server asks Stripe how it ended.
 *
 * A declined card leaves the form as it was: fix the details or use another card and pay again
 * (the same order gets a new payment attempt). No framework, no CDN; Stripe.js is loaded by the
 * page from STRIPE_JS_URL.
 */
/*
 * The checkout page (templates/orders/checkout.html): the state / province field is shown, and
 * required, only for the countries that use one (the select's data-labels: {"US": "State", ...}),
 * with only that country's regions to choose from. Without JavaScript the field is always shown
 * and the server checks the pair.
 */
(function () {
  "use strict";

  var country = document.getElementById("id_country");
  var region = document.getElementById("id_region");
  if (!country || !region) {
    return;
  }
  var labels = JSON.parse(region.dataset.labels || "{}");
  var wrapper = region.closest("div") || region.parentNode;
  var label = wrapper.querySelector("label");
  var help = document.getElementById("id_region_helptext");
  var groups = region.querySelectorAll("optgroup");

  function update() {
    var code = country.value;
    var word = labels[code];
    wrapper.hidden = !word;
    region.required = Boolean(word);
    region.disabled = !word; // not sent for a country without regions
    if (!word) {
      return;
    }
    if (label) {
      label.textContent = word + ":";
    }
    if (help) {
      help.style.display = "none"; // the no-JavaScript hint; .helptext sets display, so not `hidden`
    }
    var prefix = code + "-";
    for (var i = 0; i < groups.length; i += 1) {
      var options = groups[i].querySelectorAll("option");
      var mine = options.length > 0 && options[0].value.indexOf(prefix) === 0;
      groups[i].hidden = !mine;
      groups[i].disabled = !mine;
    }
    if (region.value && region.value.indexOf(prefix) !== 0) {
      region.value = "";
    }
  }

  country.addEventListener("change", update);
  update();
})();

(function () {
  "use strict";

  var form = document.getElementById("pay-form");
  if (!form) {
    return;
  }
  var button = document.getElementById("pay-button");
  var errorBox = document.getElementById("pay-error");
  var progress = document.getElementById("pay-progress");
  var attempts = document.getElementById("pay-attempts");
  var noAttempts = document.getElementById("pay-no-attempts");
  var buttonLabel = button.textContent;
  var busy = false;

  var STATUS_LABELS = {
    creating: "Creating",
    requires_action: "Requires action",
    processing: "Processing",
    succeeded: "Succeeded",
    failed: "Failed",
    canceled: "Canceled",
  };

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  function say(message) {
    progress.textContent = message || "";
  }

  function setBusy(isBusy, message) {
    busy = isBusy;
    button.disabled = isBusy;
    button.textContent = isBusy ? "Working…" : buttonLabel;
    form.setAttribute("aria-busy", isBusy ? "true" : "false");
    say(isBusy ? message : "");
  }

  // The answer of one of our JSON endpoints, or one made up for a network error or a non-JSON
  // answer (a CSRF failure, a proxy's error page), so callers only ever look at status/message.
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": form.dataset.csrfToken,
      },
      body: JSON.stringify(body || {}),
    }).then(
      function (response) {
        return response.json().then(
          function (answer) {
            answer.ok = response.ok;
            return answer;
          },
          function () {
            return {
              ok: false,
              status: "error",
              message:
                response.status === 403
                  ? "Your session has expired. Please reload the page and try again."
                  : "Something went wrong (HTTP " + response.status + "). Please try again.",
            };
          }
        );
      },
      function () {
        return {
          ok: false,
          status: "error",
          message: "We could not reach the shop. Please check your connection and try again.",
        };
      }
    );
  }

  function recordAttempt(answer) {
    if (!attempts || !answer.attempt) {
      return;
    }
    var item = attempts.querySelector('[data-attempt="' + answer.attempt + '"]');
    if (!item) {
      item = document.createElement("li");
      item.className = "pay-attempt";
      item.dataset.attempt = String(answer.attempt);
      attempts.appendChild(item);
    }
    item.textContent = "Attempt " + answer.attempt + ": ";
    var badge = document.createElement("span");
    badge.className = "status attempt-" + answer.status;
    badge.textContent = STATUS_LABELS[answer.status] || answer.status;
    item.appendChild(badge);
    if (answer.status === "failed" || answer.status === "canceled") {
      var reason = document.createElement("span");
      reason.className = "attempt-reason";
      reason.textContent = " " + answer.message;
      item.appendChild(reason);
    }
    if (noAttempts) {
      noAttempts.hidden = true;
    }
  }

  // Where the flow ends: leave for the order page, or show why not and let the customer retry.
  function finish(answer) {
    recordAttempt(answer);
    if (answer.redirect && answer.status !== "failed") {
      say(answer.message || "Done.");
      window.location.assign(answer.redirect);
      return;
    }
    setBusy(false);
    showError(answer.message || "The payment did not go through. Please try again.");
  }

  // Stripe's own errors (they have a type) are written for customers; anything else is not.
  function cardErrorMessage(error) {
    if (error && (error.type || error.code) && error.message) {
      return error.message;
    }
    return "Please check your card details and try again.";
  }

  function paymentMethodId(setupIntent) {
    var method = setupIntent && setupIntent.payment_method;
    return method && typeof method === "object" ? method.id : method;
  }

  function pay(stripe, card) {
    showError("");
    setBusy(true, "Checking your card…");
    return post(form.dataset.setupUrl)
      .then(function (setup) {
        if (!setup.ok) {
          return finish(setup);
        }
        return stripe
          .confirmCardSetup(setup.client_secret, { payment_method: { card: card } })
          .then(function (result) {
            if (result.error) {
              setBusy(false);
              showError(cardErrorMessage(result.error));
              return;
            }
            say("Paying…");
            return post(form.dataset.confirmUrl, {
              payment_method: paymentMethodId(result.setupIntent),
            }).then(function (answer) {
              if (answer.status !== "requires_action") {
                return finish(answer);
              }
              recordAttempt(answer);
              say(answer.message);
              return stripe.confirmCardPayment(answer.client_secret).then(function () {
                // Whatever the browser was told, our server asks Stripe how it ended.
                say("Checking the payment…");
                return post(form.dataset.syncUrl).then(finish);
              });
            });
          });
      })
      .catch(function () {
        setBusy(false);
        showError("Something went wrong in this page. Please reload it and try again.");
      });
  }

  if (typeof window.Stripe !== "function") {
    showError("The payment form could not be loaded. Please reload the page.");
    return;
  }
  var stripe = window.Stripe(form.dataset.publishableKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  button.disabled = false;
  form.dataset.ready = "true";

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!busy) {
      pay(stripe, card);
    }
  });
})();
