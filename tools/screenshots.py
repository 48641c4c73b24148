"""`make screenshots`: the shop, the payment page, the order page, the admin order page and /ops/,
at 1280 px and 390 px wide, as PNG files in docs/ (the README shows them).

It starts what `make run` starts (the Procfile, through honcho) on free ports of its own, with a
throwaway SQLite database in a temporary folder, so it runs beside a `make run` and leaves nothing
behind. It loads the demo catalog and logins (`seed_demo`), places an order as the demo customer
(through the API, with a JWT), opens its payment page, pays with the test card 4242 4242 4242 4242
through the localstripe stand-in's card form, waits until the order is paid and its confirmation
email is in the SendGrid stand-in, then shoots the order page, the admin order page and /ops/ as
the demo staff user. Headless Chromium at /usr/bin/chromium through Playwright.

Every wait is for something to be there (an element, a status, a message), never for a time, up
to one generous deadline. Not part of `make test`: it takes a minute or so.

    .venv/bin/python -m tools.screenshots [--out docs] [--widths 1280,390] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tools.processes import free_port, http_bytes, logged, manage, standins_on_free_ports, start, stop

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
DEADLINE_SECONDS = 120.0  # every wait: long enough for a loaded machine, short enough to notice a hang
MAX_FULL_PAGE_BYTES = 400_000  # larger full-page shots are retaken as the viewport only
HEIGHT = {1280: 800, 390: 844}  # a laptop's screen, a phone's (iPhone 12-15)
GOOD_CARD = "4242 4242 4242 4242"
DEMO_CUSTOMER = ("customer", "customer-demo-password")
DEMO_STAFF = ("admin", "admin-demo-password")
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 Analytical Row",
    "city": "Springfield",
    "region": "IL",
    "postal_code": "62701",
    "country": "US",
}
PAGES = ("shop", "pay", "order", "admin-order", "ops")

T = TypeVar("T")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.screenshots",
        description="Regenerate the README's screenshots (shop, payment, order, admin order, /ops/) into docs/.",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNG files (docs/)")
    parser.add_argument(
        "--widths",
        type=_widths,
        default=(1280, 390),
        help="comma-separated viewport widths in CSS pixels (default 1280,390)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (database, honcho's log) and say where"
    )
    return parser.parse_args(argv)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of widths: {text!r}") from exc
    if not widths or any(width < 200 or width > 4000 for width in widths):
        raise argparse.ArgumentTypeError("widths are between 200 and 4000 pixels")
    return widths


def shot_name(page: str, width: int) -> str:
    """docs/<page>-<width>.png, the names the README shows."""
    return f"{page}-{width}.png"


# --- waiting and HTTP ---------------------------------------------------------------------------


def eventually(check: Callable[[], T], *, what: str, alive: Callable[[], None] | None = None) -> T:
    """`check()` once it is truthy, polling up to DEADLINE_SECONDS; `alive()` may give up sooner."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            result = check()
        except (OSError, ValueError, KeyError) as exc:
            last, result = exc, None
        if result:
            return result
        time.sleep(0.2)  # a polling interval, not a wait for a time to pass
    raise SystemExit(f"gave up waiting for {what}" + (f" (last: {last})" if last else ""))


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, raw = http_bytes(method, url, body, headers, timeout=DEADLINE_SECONDS)
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


# --- the processes of `make run` ----------------------------------------------------------------


@dataclass
class Running:
    base: str
    env: dict[str, str]
    log: Path


@contextlib.contextmanager
def running(folder: Path) -> Iterator[Running]:
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "DJANGO_ENV": "development",
        "ORDER_REPOSITORY": "orm",
        "SQLITE_PATH": str(folder / "db.sqlite3"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "Q_CLUSTER_NAME": f"screenshots-{uuid.uuid4().hex[:8]}",
        "Q_WORKERS": "1",
        **standins_on_free_ports(),
        "SHEETS_FLUSH_SECONDS": "0.5",
        "MONITORING_FLUSH_SECONDS": "0.5",
        "CLOUDWATCH_LOGS_ENABLED": "true",
        "CLOUDWATCH_METRICS_ENABLED": "true",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "CACHE_URL"):
        env.pop(name, None)  # the throwaway database and the embedded cache, whatever the shell has
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        print("manage.py", *command, flush=True)
        manage(env, *command)
    log = folder / "honcho.log"
    print(f"starting the Procfile's processes (log: {log})", flush=True)
    process = start([str(BIN / "honcho"), "start", "-f", "Procfile"], env=env, log=log)

    def alive() -> None:
        if process.poll() is not None:
            raise SystemExit(f"honcho stopped ({process.returncode}):\n{log.read_text()[-4000:]}")

    base = f"http://127.0.0.1:{port}"
    try:
        eventually(
            lambda: http("GET", f"{base}/api/monitoring/health")[0] == 200, what="the web server", alive=alive
        )
        eventually(lambda: logged(log, "stripe.1", "webhooks go to"), what="the Stripe stand-in", alive=alive)
        eventually(
            lambda: http("GET", f"{env['SENDGRID_API_BASE']}/_sandbox/stats")[0] == 200,
            what="the SendGrid stand-in",
            alive=alive,
        )
        eventually(lambda: logged(log, "aws.1", "queue_url: "), what="the AWS stand-in's topics", alive=alive)
        eventually(lambda: logged(log, "worker.1", "running."), what="the task cluster", alive=alive)
        yield Running(base=base, env=env, log=log)
    finally:
        # honcho passes SIGTERM on; if that is not enough, SIGKILL to every process it started.
        stop(process, timeout=DEADLINE_SECONDS)


# --- the story: an order placed, paid, seen by its customer and by staff -------------------------


def place_order(base: str) -> tuple[str, str]:
    """A paid-to-be order of the demo customer through the API: (order id, access token)."""
    status, tokens = http(
        "POST", f"{base}/api/auth/token", {"username": DEMO_CUSTOMER[0], "password": DEMO_CUSTOMER[1]}
    )
    if status != 200:
        raise SystemExit(f"no JWT for the demo customer: {status} {tokens}")
    auth = {"Authorization": f"Bearer {tokens['access']}"}
    status, catalog = http("GET", f"{base}/api/products")
    products = [p for p in catalog if p.get("stock", 1) >= 2] if status == 200 else []
    if not products:
        raise SystemExit(f"no demo products in stock: {status} {catalog}")
    lines = [{"sku": products[0]["sku"], "quantity": 2}]
    if len(products) > 1:
        lines.append({"sku": products[1]["sku"], "quantity": 1})
    address = dict(ADDRESS)
    body = {"lines": lines, "shipping_address": address}
    status, order = http("POST", f"{base}/api/orders", body, {**auth, "Idempotency-Key": uuid.uuid4().hex})
    if status == 400 and "region" in json.dumps(order):  # an API that has no region field (yet)
        address.pop("region")
        status, order = http(
            "POST", f"{base}/api/orders", body, {**auth, "Idempotency-Key": uuid.uuid4().hex}
        )
    if status != 201:
        raise SystemExit(f"the order was refused: {status} {order}")
    return order["id"], tokens["access"]


def order_status(base: str, order_id: str, token: str) -> str:
    status, order = http("GET", f"{base}/api/orders/{order_id}", headers={"Authorization": f"Bearer {token}"})
    return order.get("status", "") if status == 200 and isinstance(order, dict) else ""


def take(page: Any, out: Path, name: str, widths: tuple[int, ...], ready: Callable[[], None]) -> None:
    """One PNG per width: the full page, or the viewport only when the full page is too heavy."""
    for width in widths:
        page.set_viewport_size({"width": width, "height": HEIGHT.get(width, 900)})
        ready()
        path = out / shot_name(name, width)
        page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
        if path.stat().st_size > MAX_FULL_PAGE_BYTES:
            page.screenshot(path=str(path), full_page=False, animations="disabled", caret="hide")
        print(
            f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({path.stat().st_size // 1024} KB)"
        )


def log_in(page: Any, base: str, login: tuple[str, str], next_path: str) -> None:
    page.goto(f"{base}/accounts/login/?next={next_path}")
    page.fill("#id_username", login[0])
    page.fill("#id_password", login[1])
    page.press("#id_password", "Enter")
    page.wait_for_url(re.compile(re.escape(f"{base}{next_path}") + r"$"))


def fill_card(page: Any) -> None:
    """The stand-in card element, field by field as on Stripe's."""
    card = page.locator("#card-element")
    for label, value in (
        ("Card number", GOOD_CARD),
        ("Expiration date (MM / YY)", "12 / 34"),
        ("CVC", "123"),
        ("ZIP/postal code", "62701"),
    ):
        card.get_by_label(label, exact=True).fill(value)


def shoot(run: Running, out: Path, widths: tuple[int, ...]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = run.base
    timeout_ms = int(DEADLINE_SECONDS * 1000)
    with sync_playwright() as playwright:
        expect.set_options(timeout=timeout_ms)
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=timeout_ms
        )
        try:
            customer = browser.new_context(viewport={"width": widths[0], "height": 800})
            customer.set_default_timeout(timeout_ms)
            page = customer.new_page()
            log_in(page, base, DEMO_CUSTOMER, "/")

            print("the shop")
            take(page, out, "shop", widths, lambda: expect(page.locator("main")).to_be_visible())

            order_id, token = place_order(base)
            print(f"the payment page of order {order_id}")
            page.goto(f"{base}/orders/{order_id}/pay/")
            expect(page.locator("#pay-form[data-ready=true]")).to_have_count(1)
            fill_card(page)
            page.locator("#card-element input").last.blur()  # no focus ring in the picture
            take(page, out, "pay", widths, lambda: expect(page.locator("#pay-button")).to_be_enabled())

            page.locator("#pay-button").click()
            # Wherever the page goes once paid, the order's status says when the payment landed.
            eventually(lambda: order_status(base, order_id, token) == "paid", what="the order to be paid")
            sendgrid = run.env["SENDGRID_API_BASE"]
            eventually(
                lambda: http("GET", f"{sendgrid}/_sandbox/messages?to=customer@example.com")[1]["messages"],
                what="the confirmation email in the SendGrid stand-in",
            )
            print("the order page")
            page.goto(f"{base}/orders/{order_id}/")
            take(page, out, "order", widths, lambda: expect(page.locator("main")).to_contain_text("Paid"))

            staff = browser.new_context(viewport={"width": widths[0], "height": 800})
            staff.set_default_timeout(timeout_ms)
            admin = staff.new_page()
            change = f"/admin/orders/order/{order_id}/change/"
            log_in(admin, base, DEMO_STAFF, change)
            print("the admin order page")
            take(admin, out, "admin-order", widths, lambda: expect(admin.locator("#content")).to_be_visible())

            print("/ops/")
            admin.goto(f"{base}/ops/")
            expect(admin.locator("h1")).to_be_visible()
            overall = admin.locator("#overall-status")
            if overall.count():
                expect(overall).not_to_have_text("")
            take(admin, out, "ops", widths, lambda: expect(admin.locator("main")).to_be_visible())
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"Screenshots need Chromium at {CHROMIUM}: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="cis-screenshots-"))
    try:
        with running(folder) as run:
            shoot(run, args.out.resolve(), args.widths)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    print(f"{len(PAGES) * len(args.widths)} screenshots in {args.out}")


if __name__ == "__main__":
    main()
