"""What monitoring stores, shared by every web and worker process through the database.

- `MetricBucket`: one row per (minute, metric, label) with a count, a sum and a latency
  histogram; processes add to the same row, so figures need no process memory.
- `ErrorRecord`: errors operators should see (a 5xx, a failed delivery, a webhook that failed).
- `ProbeResult`: each synthetic probe's outcome and latency.
- `Alert`: one row per subject and outage, however many times it fired in its window.
"""

from __future__ import annotations

from django.db import models

# Upper bounds (milliseconds) of the latency histogram's buckets; the last one is unbounded.
BUCKET_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
BUCKET_FIELDS = tuple(f"b{i}" for i in range(len(BUCKET_BOUNDS_MS) + 1))


class MetricBucket(models.Model):
    minute = models.DateTimeField()
    name = models.CharField(max_length=64)
    label = models.CharField(max_length=200, blank=True, default="")
    count = models.BigIntegerField(default=0)
    total = models.FloatField(default=0.0, help_text="Sum of the values observed (milliseconds).")
    maximum = models.FloatField(default=0.0)
    # b0 .. b13: how many values fell at or under each bound of BUCKET_BOUNDS_MS (b13: above all).
    b0 = models.BigIntegerField(default=0)
    b1 = models.BigIntegerField(default=0)
    b2 = models.BigIntegerField(default=0)
    b3 = models.BigIntegerField(default=0)
    b4 = models.BigIntegerField(default=0)
    b5 = models.BigIntegerField(default=0)
    b6 = models.BigIntegerField(default=0)
    b7 = models.BigIntegerField(default=0)
    b8 = models.BigIntegerField(default=0)
    b9 = models.BigIntegerField(default=0)
    b10 = models.BigIntegerField(default=0)
    b11 = models.BigIntegerField(default=0)
    b12 = models.BigIntegerField(default=0)
    b13 = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "name", "label"], name="metric_bucket_unique"),
        ]
        indexes = [models.Index(fields=["name", "minute"], name="metric_bucket_name_minute")]
        permissions = [("view_monitoring", "Can read the monitoring API, /metrics and the operators' page")]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.name} {self.label} x{self.count}"


class ErrorSource(models.TextChoices):
    REQUEST = "request", "Request"
    DELIVERY = "delivery", "Delivery"
    WEBHOOK = "webhook", "Webhook"
    PAYMENT = "payment", "Payment"
    PROBE = "probe", "Probe"
    TASK = "task", "Task"


class ErrorRecord(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=16, choices=ErrorSource.choices)
    integration = models.CharField(max_length=32, blank=True)
    order_id = models.UUIDField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    error_class = models.CharField(max_length=200)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["source", "at"], name="error_source_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.source} {self.error_class}"


class ProbeResult(models.Model):
    integration = models.CharField(max_length=32)
    ok = models.BooleanField()
    latency_ms = models.FloatField()
    detail = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    trigger = models.CharField(max_length=16, default="command")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["integration", "at"], name="probe_integration_at")]

    def __str__(self) -> str:
        return f"{self.integration} {'ok' if self.ok else 'failed'} {self.latency_ms:.0f} ms"


class Alert(models.Model):
    """One alert per subject (an integration, "http") for as long as its trouble lasts: firing
    again within ALERT_DEDUP_SECONDS of the last time adds to `occurrences` instead."""

    subject = models.CharField(max_length=64)
    kind = models.CharField(max_length=32, help_text="What fired first: dead_letter, circuit_open, ...")
    kinds = models.JSONField(default=dict, help_text="How often each kind fired.")
    message = models.TextField()
    first_at = models.DateTimeField(auto_now_add=True)
    last_at = models.DateTimeField()
    occurrences = models.PositiveIntegerField(default=1)
    published_at = models.DateTimeField(null=True, blank=True)
    sns_message_id = models.CharField(max_length=255, blank=True)
    publish_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-last_at", "-id"]
        indexes = [models.Index(fields=["subject", "last_at"], name="alert_subject_last")]

    def __str__(self) -> str:
        return f"{self.subject}: {self.message[:60]}"
