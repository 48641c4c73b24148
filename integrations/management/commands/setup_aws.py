"""`manage.py setup_aws`: create the SNS topic for order events, and a demo queue subscribed to it."""

from __future__ import annotations

import argparse
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from integrations.aws import aws_setup


class Command(BaseCommand):
    help = (
        "Create the SNS topic of SNS_TOPIC_NAME (FIFO when SNS_FIFO) and, with --demo-queue, an SQS "
        "queue subscribed to it with raw message delivery. Idempotent: safe to run again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--demo-queue",
            action=argparse.BooleanOptionalAction,
            default=not settings.PRODUCTION,
            help="also create the SQS queue SNS_DEMO_QUEUE_NAME subscribed to the topic "
            "(default: on outside production)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = aws_setup(demo_queue=options["demo_queue"])
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"AWS setup failed: {exc}") from exc
        for key, value in result.items():
            self.stdout.write(f"{key}: {value}")
