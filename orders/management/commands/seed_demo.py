"""`manage.py seed_demo`: a small demo catalog and a staff user, safe to run again and again.

Never in production (settings.PRODUCTION): the demo logins' passwords are published in this file
and the README, so a demo admin there would be an open door.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from orders.models import Product

DEMO_PRODUCTS = [
    ("MUG-001", "Cloud mug", "A 350 ml stoneware mug with the cloud logo.", 1450, 40),
    ("TEE-001", "Integration tee", "Organic cotton t-shirt, unisex fit.", 2400, 25),
    ("CAP-001", "Retry cap", "Embroidered cap. Retries with backoff.", 1900, 15),
    ("STK-001", "Sticker pack", "Ten vinyl stickers for your laptop.", 500, 200),
    ("BTL-001", "Idempotent bottle", "Insulated 750 ml steel bottle.", 3200, 10),
    ("NTB-001", "Outbox notebook", "A5 dotted notebook, 120 pages.", 1200, 0),
]
DEMO_STAFF_USERNAME = "admin"
DEMO_STAFF_PASSWORD = "admin-demo-password"  # noqa: S105 - a documented demo login, local only
DEMO_CUSTOMER_USERNAME = "customer"
DEMO_CUSTOMER_PASSWORD = "customer-demo-password"  # noqa: S105


class Command(BaseCommand):
    help = "Load the demo catalog and create the demo staff and customer users (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError(
                "seed_demo refuses to run in production (DJANGO_ENV=production): its demo logins "
                "have published passwords. Create staff with `manage.py createsuperuser` instead."
            )
        created = 0
        for sku, name, description, price_minor, stock in DEMO_PRODUCTS:
            _, was_created = Product.objects.get_or_create(
                sku=sku,
                defaults={
                    "name": name,
                    "description": description,
                    "price_minor": price_minor,
                    "currency": "USD",
                    "stock": stock,
                    "active": True,
                },
            )
            created += was_created
        self.stdout.write(f"Demo catalog: {created} product(s) added, {len(DEMO_PRODUCTS)} in the demo set.")

        users = get_user_model()
        for username, password, staff in [
            (DEMO_STAFF_USERNAME, DEMO_STAFF_PASSWORD, True),
            (DEMO_CUSTOMER_USERNAME, DEMO_CUSTOMER_PASSWORD, False),
        ]:
            user, was_created = users.objects.get_or_create(
                username=username, defaults={"email": f"{username}@example.com"}
            )
            if was_created:
                user.is_staff = user.is_superuser = staff
                user.set_password(password)
                user.save()
            role = "staff" if staff else "customer"
            state = "created" if was_created else "already there"
            self.stdout.write(f"Demo {role} login: {username} / {password} ({state})")
