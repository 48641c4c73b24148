"""Reading HTML forms in tests that drive the live server with `requests`, as a browser would."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import requests


class _Inputs(HTMLParser):
    def __init__(self, form_id: str | None) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = form_id is None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form" and self.form_id is not None:
            self.inside = attributes.get("id") == self.form_id
        elif tag == "input" and self.inside and attributes.get("name"):
            if attributes.get("type") in {"submit", "checkbox", "radio"}:
                return
            self.fields[attributes["name"] or ""] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.form_id is not None:
            self.inside = False


def form_fields(html: str, form_id: str | None = None) -> dict[str, str]:
    """The named inputs (hidden, text...) of the form with `form_id` (or of the whole page)."""
    parser = _Inputs(form_id)
    parser.feed(html)
    return parser.fields


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def log_in(session: requests.Session, base: str, username: str, *, path: str = "/accounts/login/") -> None:
    """Log in through a login form (the site's or the admin's), with its CSRF token."""
    page = session.get(f"{base}{path}", timeout=30)
    assert page.status_code == 200, page.text
    answer = session.post(
        f"{base}{path}",
        data={"csrfmiddlewaretoken": csrf_token(page.text), "username": username, "password": "pw-for-tests"},
        headers={"Referer": f"{base}{path}"},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 302, answer.text
