"""`POST /webhooks/stripe`: verify the signature on the raw body, store the event once, apply it."""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from payments import services
from payments.gateways.base import InvalidWebhook, get_payment_gateway

logger = logging.getLogger(__name__)


@csrf_exempt  # Stripe cannot send a CSRF token; the signature authenticates the request instead
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    try:
        event = get_payment_gateway().verify_webhook(
            request.body, request.headers.get("Stripe-Signature", "")
        )
    except InvalidWebhook as exc:
        logger.warning("Refused a Stripe webhook: %s", exc)
        return JsonResponse({"code": "invalid_webhook", "message": str(exc)}, status=400)
    try:
        stored = services.webhook_receive(event=event)
    except Exception:  # noqa: BLE001 - recorded on the stored event; Stripe retries on a 5xx
        return JsonResponse(
            {
                "code": "processing_failed",
                "message": f"Event {event.id} could not be applied; it will be retried.",
            },
            status=500,
        )
    return JsonResponse({"received": event.id, "result": stored.result})
