"""`POST /webhooks/stripe`: verify the signature on the raw body, store the event once, apply it.

Whatever the body, the answer is JSON: 400 for anything that cannot be verified or parsed (too
large, not UTF-8, not JSON, nested too deep, a bad or stale signature), recorded as a
`WebhookRefusal`; 200 once the event is stored and applied; 503 when applying it failed (Stripe
retries, and `manage.py stripe_events replay --failed` does too).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from access.throttling import rate_limit
from payments import services
from payments.gateways.base import InvalidWebhook, get_payment_gateway

logger = logging.getLogger(__name__)


def _refuse(request: HttpRequest, reason: str, size: int) -> JsonResponse:
    services.webhook_refusal_record(
        reason=reason,
        size=size,
        source=request.META.get("REMOTE_ADDR") or None,
        signed=bool(request.headers.get("Stripe-Signature")),
    )
    logger.warning(
        "Refused a Stripe webhook: %s",
        reason,
        extra={"event": "webhook.refused", "error_class": "InvalidWebhook"},
    )
    return JsonResponse({"code": "invalid_webhook", "message": reason}, status=400)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature authenticates the request instead
@require_POST
@rate_limit("webhook", methods=("POST",), per="address")
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    limit = int(settings.STRIPE_WEBHOOK_MAX_BYTES)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _refuse(request, f"The body is larger than {limit} bytes.", declared)
    try:
        body = request.body
    except RequestDataTooBig:
        return _refuse(request, f"The body is larger than {limit} bytes.", declared)
    if len(body) > limit:
        return _refuse(request, f"The body is larger than {limit} bytes.", len(body))
    try:
        event = get_payment_gateway().verify_webhook(body, request.headers.get("Stripe-Signature", ""))
    except InvalidWebhook as exc:
        return _refuse(request, str(exc)[:300], len(body))
    try:
        stored = services.webhook_receive(event=event)
    except Exception:  # noqa: BLE001 - recorded on the stored event; Stripe retries on a non-2xx
        return JsonResponse(
            {
                "code": "processing_failed",
                "message": f"Event {event.id} could not be applied yet; it will be retried.",
            },
            status=503,
        )
    return JsonResponse({"received": event.id, "result": stored.result})
