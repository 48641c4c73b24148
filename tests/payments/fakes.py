"""An in-memory `PaymentGateway` (a fake of our own port) for unit tests of the payment services.

It keeps intents and refunds in dictionaries, honours idempotency keys the way Stripe does (the
same key with the same parameters returns the first answer; with other parameters it is refused
as a conflict), and can be told to fail the next calls. Integration tests use
the Stripe adapter against localstripe instead.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Any

from payments.gateways.base import (
    GatewayConflict,
    GatewayError,
    IntentRequest,
    IntentResult,
    IntentStatus,
    InvalidWebhook,
    RefundRequest,
    RefundResult,
    WebhookEventData,
)

DECLINING_METHODS = frozenset({"pm_card_chargeCustomerFail", "pm_card_visa_chargeDeclined"})
ACTION_METHODS = frozenset({"pm_card_threeDSecure2Required"})


class FakeGateway:
    def __init__(self) -> None:
        self.intents: dict[str, IntentResult] = {}
        self.refunds: dict[str, RefundResult] = {}
        self.answers: dict[str, Any] = {}  # idempotency key → first answer
        self.requests: dict[str, Any] = {}  # idempotency key → the first request's parameters
        self.calls: list[tuple[str, str]] = []  # (operation, idempotency key)
        self.fail_next = 0  # how many of the next calls raise GatewayError
        self.lose_next_answer = False  # do the next call's work, then raise GatewayError (a timeout)
        self._ids = itertools.count(1)

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise GatewayError("the fake provider is down")

    def _replay(self, key: str, request: Any) -> bool:
        """Whether `key` was used before; `GatewayConflict` if it was, with other parameters."""
        if key not in self.requests:
            self.requests[key] = request
            return False
        if self.requests[key] != request:
            raise GatewayConflict(
                f"Keys for idempotent requests can only be used with the same parameters ({key})."
            )
        return key in self.answers

    def create_intent(self, request: IntentRequest) -> IntentResult:
        self.calls.append(("create_intent", request.idempotency_key))
        self._maybe_fail()
        if self._replay(request.idempotency_key, request):
            return self.intents[self.answers[request.idempotency_key]]
        intent_id = f"pi_fake_{next(self._ids)}"
        status, error = IntentStatus.SUCCEEDED, ("", "")
        if request.payment_method in DECLINING_METHODS:
            status, error = IntentStatus.REQUIRES_PAYMENT_METHOD, ("card_declined", "Your card was declined.")
        elif request.payment_method in ACTION_METHODS:
            status = IntentStatus.REQUIRES_ACTION
        intent = IntentResult(
            intent_id=intent_id,
            status=status,
            amount_minor=request.amount_minor,
            amount_received_minor=request.amount_minor if status == IntentStatus.SUCCEEDED else 0,
            currency=request.currency,
            client_secret=f"{intent_id}_secret",
            metadata={"order_id": request.order_id, "attempt": str(request.attempt), **request.metadata},
            created=int(time.time()),
            error_code=error[0],
            error_message=error[1],
        )
        self.intents[intent_id] = intent
        self.answers[request.idempotency_key] = intent_id
        return intent

    def complete_action(self, intent_id: str) -> IntentResult:
        """What the customer finishing 3-D Secure does to the intent."""
        intent = self.intents[intent_id]
        self.intents[intent_id] = replace(
            intent, status=IntentStatus.SUCCEEDED, amount_received_minor=intent.amount_minor
        )
        return self.intents[intent_id]

    def retrieve_intent(self, intent_id: str) -> IntentResult:
        self.calls.append(("retrieve_intent", ""))
        self._maybe_fail()
        return self.intents[intent_id]

    def find_intents(self, *, order_id: str, attempt: int | None = None) -> list[IntentResult]:
        self._maybe_fail()
        return [
            i
            for i in self.intents.values()
            if i.metadata.get("order_id") == order_id
            and (attempt is None or i.metadata.get("attempt") == str(attempt))
        ]

    def refund(self, request: RefundRequest) -> RefundResult:
        self.calls.append(("refund", request.idempotency_key))
        self._maybe_fail()
        if self._replay(request.idempotency_key, request):
            return self.refunds[self.answers[request.idempotency_key]]
        refund = RefundResult(
            refund_id=f"re_fake_{next(self._ids)}",
            status="succeeded",
            amount_minor=request.amount_minor,
            intent_id=request.intent_id,
            metadata=dict(request.metadata),
        )
        self.refunds[refund.refund_id] = refund
        self.answers[request.idempotency_key] = refund.refund_id
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise GatewayError("the answer was lost on the way back")
        return refund

    def find_refunds(self, *, intent_id: str) -> list[RefundResult]:
        self._maybe_fail()
        return [r for r in self.refunds.values() if r.intent_id == intent_id]

    def list_events(
        self, *, created_after: int, types: list[str], limit: int | None = 100
    ) -> list[WebhookEventData]:
        self._maybe_fail()
        return []

    def create_setup_intent(self, *, idempotency_key: str) -> str:
        self._maybe_fail()
        return f"seti_fake_{next(self._ids)}_secret"

    def probe(self) -> str:
        self.calls.append(("probe", ""))
        self._maybe_fail()
        return "fake balance read"

    def verify_webhook(self, payload: bytes, signature: str) -> WebhookEventData:
        raise InvalidWebhook("the fake gateway receives no webhooks")

    def parse_event(self, payload: dict[str, Any]) -> WebhookEventData:
        raise InvalidWebhook("the fake gateway receives no webhooks")
