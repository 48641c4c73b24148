from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from orders.management.commands.seed_demo import DEMO_PRODUCTS, DEMO_STAFF_PASSWORD
from orders.models import Product

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_prints_the_logins() -> None:
    out = StringIO()
    call_command("seed_demo", stdout=out)
    Product.objects.filter(sku=DEMO_PRODUCTS[0][0]).update(stock=3)  # a sale happened
    call_command("seed_demo", stdout=out)
    assert Product.objects.count() == len(DEMO_PRODUCTS)
    assert Product.objects.get(sku=DEMO_PRODUCTS[0][0]).stock == 3  # a re-run does not reset data
    assert get_user_model().objects.filter(username="admin", is_staff=True).count() == 1
    assert authenticate(username="admin", password=DEMO_STAFF_PASSWORD) is not None
    assert f"admin / {DEMO_STAFF_PASSWORD}" in out.getvalue()


def test_seed_demo_refuses_to_run_in_production(settings: Any) -> None:
    """Its demo logins have published passwords: in production it creates nothing."""
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="refuses to run in production"):
        call_command("seed_demo", stdout=StringIO())
    assert not Product.objects.exists()
    assert not get_user_model().objects.filter(username="admin").exists()
