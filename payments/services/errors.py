"""The errors the payment services raise on purpose, each with the HTTP answer it becomes."""

from __future__ import annotations

from core.errors import ApplicationError


class PaymentError(ApplicationError):
    """Base of the payment errors the API maps to HTTP answers."""


class PaymentNotAllowed(PaymentError):
    http_status = 409
    code = "payment_not_allowed"


class PaymentInProgress(PaymentError):
    http_status = 409
    code = "payment_in_progress"


class PaymentConflict(PaymentError):
    """Stripe refused a request as an idempotency conflict (answered 409)."""

    http_status = 409
    code = "idempotency_conflict"


class RefundRefused(PaymentError):
    http_status = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str = "amount_minor") -> None:
        super().__init__(message)
        self.fields = {field: [message]}
