"""`manage.py api_keys create|list|revoke`: API keys for service clients, from the shell.

manage.py api_keys create --name reporting --user svc-reports --scope orders:read [--expires-days 90]
manage.py api_keys list
manage.py api_keys revoke PREFIX
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from access import selectors, services


class Command(BaseCommand):
    help = "Create, list and revoke API keys (the key is printed once, at creation)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create a key and print it once.")
        create.add_argument("--name", required=True, help="What the key is for (50 characters at most).")
        create.add_argument("--user", required=True, help="The username the key acts for.")
        create.add_argument(
            "--scope",
            action="append",
            default=[],
            dest="scopes",
            choices=sorted(settings.API_SCOPES),
            help="A scope the key carries; repeat for several.",
        )
        create.add_argument("--expires-days", type=int, default=None, help="Days until the key expires.")
        actions.add_parser("list", help="List keys (prefix, name, user, scopes, dates, state).")
        revoke = actions.add_parser("revoke", help="Revoke a key by its prefix (cannot be undone).")
        revoke.add_argument("prefix")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        getattr(self, f"_{action}")(**options)

    def _create(self, *, name: str, user: str, scopes: list[str], expires_days: int | None, **_: Any) -> None:
        if not scopes:
            raise CommandError("Give at least one --scope.")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        try:
            key, raw = services.api_key_create(name=name, user=user, scopes=scopes, expires_at=expires_at)
        except services.ApiKeyError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"Created API key {key.prefix} ({key.name}) for {key.user.get_username()}.")
        self.stdout.write("Store it now; it cannot be shown again:")
        self.stdout.write(raw)

    def _list(self, **_: Any) -> None:
        rows = selectors.api_key_list()
        self.stdout.write("prefix    name  user  scopes  created  expires  last_used  state")
        for key in rows:
            state = "revoked" if key.revoked else "expired" if key.has_expired else "active"
            self.stdout.write(
                "  ".join(
                    [
                        key.prefix,
                        key.name,
                        key.user.get_username(),
                        ",".join(key.scopes) or "-",
                        f"{key.created:%Y-%m-%d %H:%M}",
                        f"{key.expiry_date:%Y-%m-%d %H:%M}" if key.expiry_date else "never",
                        f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
                        state,
                    ]
                )
            )

    def _revoke(self, *, prefix: str, **_: Any) -> None:
        try:
            key = services.api_key_revoke(prefix=prefix)
        except services.ApiKeyError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"Revoked API key {key.prefix} ({key.name}).")
