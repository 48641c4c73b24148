"""`manage.py dynamodb create-tables | describe`: the DynamoDB order table, for operators.

Thin over `orders.repositories.dynamodb.create_tables` / `describe_tables`; the table is
`settings.DYNAMODB_TABLE` at `settings.AWS_ENDPOINT_URL` (empty: real AWS).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from orders.repositories.dynamodb import create_tables, describe_tables


class Command(BaseCommand):
    help = "Create (idempotent, waits until ACTIVE) or describe the DynamoDB table of the orders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["create-tables", "describe"])
        parser.add_argument("--json", action="store_true", help="Print the description as JSON.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        tables = create_tables() if action == "create-tables" else describe_tables()
        if options["json"]:
            self.stdout.write(json.dumps(tables, indent=2, sort_keys=True))
            return
        for table in tables:
            state = ""
            if "created" in table:
                state = " (created)" if table["created"] else " (already there)"
            self.stdout.write(
                f"{table['table']}: {table['status']}{state}, {table.get('items', 0)} items,"
                f" {table.get('billing_mode', '-')}"
            )
            for index in table["indexes"]:
                self.stdout.write(
                    f"  {index['name']}: {', '.join(index['key'])} ({index['projection']}) {index['status']}"
                )
            if table.get("missing_indexes"):
                self.stdout.write(
                    self.style.WARNING(f"  missing indexes: {', '.join(table['missing_indexes'])}")
                )
