"""`manage.py sandbox_aws`: the AWS stand-in (moto) for `make run`, with the topic and demo queue.

Development tooling, never used in production: moto keeps everything in memory, so each start
begins empty and this command runs `aws_setup` again once the server listens.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.test import override_settings

from integrations.aws import aws_setup
from sandbox.moto import INBOX_PATH, SerialMotoServer

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# AWS_ENDPOINT_URL's default outside production (config/settings.py).
LOCAL_ENDPOINT_URL = "http://127.0.0.1:8427"


class Command(BaseCommand):
    help = (
        "Run moto's server on 127.0.0.1 (AWS_ENDPOINT_URL's port) for SNS, SQS, DynamoDB and "
        "CloudWatch, then create the SNS topic and its demo SQS queue. Stops on SIGTERM or SIGINT."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=None, help="default: the port of AWS_ENDPOINT_URL")
        parser.add_argument("--no-setup", action="store_true", help="do not create the topic and queue")
        parser.add_argument("--verbose-requests", action="store_true", help="log every request moto serves")

    def handle(self, *args: Any, **options: Any) -> None:
        endpoint = urlparse(settings.AWS_ENDPOINT_URL)
        if endpoint.hostname not in LOCAL_HOSTS:
            raise CommandError(
                f"AWS_ENDPOINT_URL is {endpoint.geturl() or 'empty (real AWS)'}, not a local stand-in "
                f"such as {LOCAL_ENDPOINT_URL}."
            )
        port = options["port"] or endpoint.port or urlparse(LOCAL_ENDPOINT_URL).port
        _check_port_free(port)
        if not options["verbose_requests"]:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

        server = SerialMotoServer(port=port)
        url = server.start()
        try:
            self.stdout.write(f"moto (AWS stand-in) on {url} (SNS inbox: {url}{INBOX_PATH})")
            if not options["no_setup"]:
                with override_settings(AWS_ENDPOINT_URL=url):
                    result = aws_setup(demo_queue=True)
                    if settings.ORDER_REPOSITORY.endswith(".DynamoDbOrderRepository"):
                        # Orders live in DynamoDB: its table on this same server.
                        from orders.repositories.dynamodb import create_tables

                        create_tables()
                        result["dynamodb_table"] = settings.DYNAMODB_TABLE
                for key, value in result.items():
                    self.stdout.write(f"{key}: {value}")
            self.stdout.flush()
            stop.wait()
        finally:
            server.stop()


def _check_port_free(port: int) -> None:
    """Fail now if the port is taken (moto's thread would die and leave start() waiting forever)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise CommandError(f"127.0.0.1:{port} is already in use: {exc}") from exc
