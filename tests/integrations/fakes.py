"""Fakes of our own integration port (`integrations.adapters.base.IntegrationAdapter`) for unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from integrations.adapters.base import DeliveryError, DeliveryOutcome, DeliveryRequest, ProbeFailed


@dataclass
class FakeAdapter:
    """An in-memory adapter for unit tests: records what it was given, fails on request."""

    name: str = "fake"
    max_batch: int = 10
    delivered: list[DeliveryRequest] = field(default_factory=list)
    # Each queued error is used for one delivery, in order; None means success.
    script: list[DeliveryError | None] = field(default_factory=list)
    calls: int = 0
    probes: int = 0

    def deliver(self, requests: list[DeliveryRequest]) -> list[DeliveryOutcome]:
        self.calls += 1
        outcomes = []
        for request in requests:
            error = self.script.pop(0) if self.script else None
            if error is None:
                self.delivered.append(request)
                outcomes.append(
                    DeliveryOutcome(
                        delivery_id=request.delivery_id, external_id=f"fake-{request.idempotency_key}"
                    )
                )
            else:
                outcomes.append(DeliveryOutcome(delivery_id=request.delivery_id, error=error))
        return outcomes

    def probe(self) -> str:
        """Counts the probe; the next scripted error, if any, makes it fail."""
        self.probes += 1
        error = self.script.pop(0) if self.script else None
        if error is not None:
            raise ProbeFailed.from_error(error)
        return "fake probe ok"
