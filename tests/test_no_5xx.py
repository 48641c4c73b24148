"""No input yields a 5xx: every route in the URLconf, every method, hostile bodies.

For each route (walking `get_resolver()`, path parameters filled with a real order id, another
UUID, an integer, a real SKU...) and each method, as an anonymous caller and as a logged-in
customer (session and JWT), post invalid UTF-8, `[` x 100,000, a body over
DATA_UPLOAD_MAX_MEMORY_SIZE and bodies with garbage content types: no answer may be 5xx. The
Stripe stand-in runs, so the payment endpoints reach a real (stand-in) provider; a 5xx there would
be ours. Django's test Client: in-process, fast, and exceptions surface as failures.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern

from orders.domain import Actor, Order
from payments import services as payment_services
from tests.conftest import ADDRESS_JSON
from tests.payments.conftest import stripe_api, stripe_sandbox  # noqa: F401 - fixtures, reused

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440
# The fuzz lowers the limit (the same code paths, a tenth of the bytes to copy per request).
FUZZ_LIMIT = 256 * 1024
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
# (name, content type, body): sent to every route with every method it accepts.
HOSTILE_BODIES: list[tuple[str, str, bytes]] = [
    ("invalid UTF-8", JSON, b'{"email": "\xff\xfe\xfa"}'),
    ("deep nesting", JSON, b"[" * 100_000),
    ("oversized JSON", JSON, b'{"notes": "' + b"x" * (FUZZ_LIMIT + 10) + b'"}'),
    ("oversized form", FORM, b"a=" + b"x" * (FUZZ_LIMIT + 10)),
    ("form, invalid UTF-8", FORM, b"%ff%fe=%ff&\xff\xfe=1"),
    ("multipart, garbage", "multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: x\r\n\r\n\xff"),
    ("garbage type", "application/\x7fnonsense", b"\x00\x01\x02"),
]
# And these too where a JSON body is read: the API and the pay page's endpoints.
JSON_BODIES: list[tuple[str, str, bytes]] = [
    ("deep object", JSON, b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
    ("NaN", JSON, b'{"quantity": NaN}'),
    ("bad charset", "application/json; charset=no-such-charset", b"{}"),
    ("multipart, no boundary", "multipart/form-data", b"--x\r\n\r\n"),
    ("text", "text/plain", b"hello"),
    ("xml", "application/xml", b"<a>" * 1000),
    ("scalar", JSON, b"12"),
    ("array", JSON, b"[{}]"),
]
BODY_METHODS = ("post", "put", "patch", "delete")
SAFE_METHODS = ("get", "head", "options")
CONVERTER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def walk(resolvers: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    """(route template, pattern) for every pattern: route syntax kept, regexes made literal."""
    for entry in resolvers:
        pattern = entry.pattern
        if isinstance(pattern, RoutePattern):
            piece = str(pattern._route)
        else:
            assert isinstance(pattern, RegexPattern)
            piece = regex_sample(pattern._regex)
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, prefix + piece)
        else:
            yield prefix + piece, entry


def regex_sample(regex: str) -> str:
    """A path matching a simple regex (Django admin's and our catch-alls): named groups get a
    sample (an app label, an id), the anchors go."""

    def group(match: re.Match[str]) -> str:
        name, body = match.group(1), match.group(2)
        if "|" in body:  # admin's app_label alternatives
            return body.strip("()").split("|")[0]
        return f"<str:{name}>"

    sample = re.sub(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)", group, regex)
    sample = sample.lstrip("^").rstrip("$")
    sample = sample.replace(".*", "fuzz").replace(r"\Z", "").replace("\\", "")
    return sample


@pytest.fixture
def samples(place: Any, customer: Any, mug: Any) -> dict[str, list[str]]:
    order: Order = place(customer=customer)
    real, other = str(order.id), str(uuid.uuid4())
    return {
        "uuid": [real, other],
        "int": ["1", "2147483647"],
        "str": [real, "1", mug.sku],
        "path": [real, "1"],
        "slug": ["email", "1"],
        "sku": [mug.sku, "NO-SUCH"],
        "name": ["email", "nope"],
    }


def paths_for(template: str, samples: dict[str, list[str]]) -> list[str]:
    """The template with each parameter filled by each of its samples, one parameter at a time
    varying (all others at their first sample), so the count stays linear; the first path has
    every parameter at its first sample."""
    parameters = list(CONVERTER.finditer(template))
    if not parameters:
        return ["/" + template]

    def sample_list(match: re.Match[str]) -> list[str]:
        name, converter = match.group("name"), match.group("converter") or "str"
        return samples.get(name) or samples.get(converter) or samples["str"]

    first = {match.group(0): sample_list(match)[0] for match in parameters}
    paths = []
    for match in parameters:
        for value in sample_list(match):
            values = first | {match.group(0): value}
            path = "/" + CONVERTER.sub(lambda m, v=values: v[m.group(0)], template)
            if path not in paths:
                paths.append(path)
    return paths


def all_routes(samples: dict[str, list[str]]) -> list[list[str]]:
    """Per route of the URLconf, its sample paths (the first with the real ids)."""
    return [paths_for(template, samples) for template, _ in walk(get_resolver().url_patterns)]


def check(response: Any, what: str, failures: list[str]) -> None:
    if response.status_code >= 500:
        failures.append(f"{what} -> {response.status_code} {response.content[:200]!r}")


def takes_json(path: str) -> bool:
    return path.startswith("/api/") or "/pay/" in path


def fuzz(
    client: Client, routes: list[list[str]], who: str, headers: dict[str, str] | None = None
) -> list[str]:
    """Each route's paths with every method; every method the route accepts (not 405 to a plain
    request) gets the hostile bodies, on the route's first path."""
    failures: list[str] = []
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()}
    for paths in routes:
        for index, path in enumerate(paths):
            for method in SAFE_METHODS:
                check(getattr(client, method)(path, **extra), f"{who} {method.upper()} {path}", failures)
            for method in BODY_METHODS:
                plain = client.generic(method.upper(), path, b"{}", content_type=JSON, **extra)
                check(plain, f"{who} {method.upper()} {path} {{}}", failures)
                if index > 0 or plain.status_code == 405:
                    continue
                bodies = HOSTILE_BODIES + (JSON_BODIES if takes_json(path) else [])
                for name, content_type, body in bodies:
                    response = client.generic(method.upper(), path, body, content_type=content_type, **extra)
                    check(response, f"{who} {method.upper()} {path} [{name}]", failures)
    return failures


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Any) -> Iterator[None]:
    """The fuzz must reach the parsers: a 429 answers before any body is read. Rate limits have
    their own tests; here every budget is off, and no counter outlives the test."""
    rates = dict.fromkeys(settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}), "off")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    caches["shared"].clear()
    yield
    caches["shared"].clear()


@pytest.fixture
def hostile_setup(stripe_api: str, settings: Any) -> None:  # noqa: F811 - the fixture above
    # Stripe.js's page and the webhook speak to the stand-in; the integrations stay idle (their
    # deliveries are queued, not sent, by the outbox hook).
    settings.STRIPE_JS_URL = f"{stripe_api}/js.stripe.com/v3/"
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = FUZZ_LIMIT


def test_every_route_answers_hostile_bodies_without_a_5xx(
    hostile_setup: None, samples: dict[str, list[str]], customer: Any, api_as: Any
) -> None:
    routes = all_routes(samples)
    paths = {path for route in routes for path in route}
    assert {"/api/orders", "/webhooks/stripe", "/admin/", "/api/auth/token"} <= paths
    assert any(path.startswith("/api/orders/") for path in paths)

    failures = fuzz(Client(), routes, "anonymous")
    session = Client()
    session.force_login(customer)
    failures += fuzz(session, routes, "customer (session)")
    token = api_as(customer)._credentials["HTTP_AUTHORIZATION"]
    api_routes = [route for route in routes if route[0].startswith("/api/")]
    failures += fuzz(Client(), api_routes, "customer (JWT)", {"Authorization": token})
    assert not failures, "\n".join(failures[:50])


def test_the_csrf_check_reads_oversized_forms_without_a_5xx(hostile_setup: None, customer: Any) -> None:
    """With CSRF enforced (as browsers meet it) the CSRF middleware reads a form body before any
    view: an oversized one answers 413 in the JSON shape there too, not Django's HTML 400."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(customer)
    for path in ("/accounts/login/", "/checkout/", "/cart/add/MUG-1/"):
        response = client.post(
            path, b"a=" + b"x" * (LIMIT + 10), content_type="application/x-www-form-urlencoded"
        )
        assert response.status_code == 413, (path, response.status_code)
        assert response.json()["code"] == "too_large"


class TestTheAnswers:
    """What the hostile bodies get: 400 `parse_error` or 413 `too_large`, in the JSON shape."""

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            (b"[" * 100_000, 400, "parse_error"),
            (b'{"a":' * 65 + b"1" + b"}" * 65, 400, "parse_error"),
            (b'{"username": "\xff"}', 400, "parse_error"),
            (b'{"username": NaN}', 400, "parse_error"),
            (b"{nope", 400, "parse_error"),
            (b'{"x": "' + b"y" * (LIMIT + 1) + b'"}', 413, "too_large"),
        ],
        ids=["deep", "65 levels", "utf-8", "NaN", "not json", "too large"],
    )
    def test_api_bodies(self, body: bytes, status: int, code: str) -> None:
        for path in ("/api/auth/token", "/api/auth/token/refresh", "/api/orders"):
            response = Client().post(path, body, content_type=JSON)
            assert response.status_code == status, (path, response.content[:200])
            assert response.json()["code"] == code and response.json()["message"]

    @pytest.mark.usefixtures("repository")  # reaches the order store
    def test_a_body_within_the_depth_limit_is_read(self, mug: Any) -> None:
        nested_notes = {"sku": mug.sku, "quantity": 1}
        body = {"lines": [nested_notes], "email": "guest@example.com", "shipping_address": ADDRESS_JSON}
        response = Client().post("/api/orders", body, content_type=JSON)
        assert response.status_code in {201, 200, 401, 403}, response.content

    def test_the_pay_page_endpoints_share_the_parser(
        self, hostile_setup: None, place: Any, customer: Any
    ) -> None:
        order = place(customer=customer)
        client = Client()
        client.force_login(customer)
        deep = client.post(f"/orders/{order.id}/pay/confirm", b"[" * 4000, content_type=JSON)
        assert deep.status_code == 400 and deep.json()["code"] == "invalid"
        huge = client.post(f"/orders/{order.id}/pay/confirm", b" " * (LIMIT + 1), content_type=JSON)
        assert huge.status_code == 413 and huge.json()["code"] == "too_large"

    def test_a_malformed_bearer_token_names_no_python_repr(self, db: None) -> None:
        response = Client().get("/api/orders", HTTP_AUTHORIZATION="Bearer not-a-token")
        assert response.status_code == 401
        message = response.json()["message"]
        assert "ErrorDetail" not in message and "{" not in message and "[" not in message, message

    def test_another_customers_payment_is_a_404_naming_only_the_asked_id(
        self, place: Any, customer: Any, other_customer: Any, api_as: Any, settings: Any
    ) -> None:
        settings.PAYMENT_GATEWAY = "tests.payments.fakes.FakeGateway"
        order = place(customer=customer)
        payment = payment_services.payment_confirm(
            order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("t")
        )
        assert api_as(customer).get(f"/api/payments/{payment.id}").status_code == 200
        response = api_as(other_customer).get(f"/api/payments/{payment.id}")
        assert response.status_code == 404
        assert response.json() == {"code": "not_found", "message": f"Payment {payment.id} was not found."}
        assert str(order.id) not in response.content.decode()
