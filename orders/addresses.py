"""Countries (ISO 3166-1) and their regions (ISO 3166-2) for shipping addresses, from pycountry's
copy of the ISO tables. One place decides what a valid country and region are, for the checkout
form and the orders API alike.

A shipping address stores the country as its alpha-2 code ("DE") and the region as the part of
its ISO 3166-2 code after the country ("CA" of "US-CA"), as a postal label writes it.
"""

from __future__ import annotations

import unicodedata
from functools import cache

import pycountry

# Countries whose postal addresses need a state, province or territory: the checkout form asks
# for one and refuses an address without it. Elsewhere a region is optional.
REGION_REQUIRED: dict[str, str] = {"US": "State", "CA": "Province or territory", "AU": "State or territory"}


class AddressError(ValueError):
    """A country or region that is not in ISO 3166, with a message for the customer."""


@cache
def _countries() -> dict[str, str]:
    """Alpha-2 code → the name people use ("Bolivia", not "Bolivia, Plurinational State of")."""
    return {
        country.alpha_2: getattr(country, "common_name", None) or country.name
        for country in pycountry.countries
    }


def country_choices() -> list[tuple[str, str]]:
    """(alpha-2 code, name) of every ISO 3166-1 country, by name."""
    return sorted(_countries().items(), key=lambda item: _sort_key(item[1]))


def country_name(code: str) -> str:
    """The country's name, or the code itself when it is not one (an old order's odd value)."""
    return _countries().get((code or "").upper(), code)


def country_code(value: str) -> str:
    """The alpha-2 code of `value`, a code in any case ("de" → "DE"). `AddressError` otherwise:
    "USA" or "Germany" are refused, never cut to "US" or "GE" (Georgia)."""
    code = (value or "").strip().upper()
    if code not in _countries():
        raise AddressError(
            f"“{value}” is not an ISO 3166 country code; use a two-letter code such as US or DE."
        )
    return code


@cache
def _regions(country: str) -> dict[str, str]:
    """Short region code ("CA") → name ("California") of the country's ISO 3166-2 subdivisions,
    top level only (England, not its boroughs), by name."""
    subdivisions = [s for s in pycountry.subdivisions.get(country_code=country) or [] if not s.parent_code]
    found = {s.code.split("-", 1)[1]: s.name for s in subdivisions}
    return dict(sorted(found.items(), key=lambda item: _sort_key(item[1])))


def region_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Grouped choices for the regions of the countries in `REGION_REQUIRED`: (country name,
    [("US-CA", "California"), ...]). The values carry the country: "WA" is in the US and in AU."""
    return [
        (country_name(country), [(f"{country}-{code}", name) for code, name in _regions(country).items()])
        for country in REGION_REQUIRED
    ]


def region_code(country: str, value: str) -> str:
    """The short region code of `value` in `country`: a short code ("ca"), a full ISO 3166-2
    code ("US-CA") or a name ("California"), in any case. For a country without ISO regions
    in our tables, the text as given. Empty stays empty. `AddressError` for a region that is
    not the country's."""
    text = (value or "").strip()
    regions = _regions(country)
    if not text or not regions:
        return text
    wanted = text.upper()
    if wanted.startswith(f"{country}-"):
        wanted = wanted[len(country) + 1 :]
    if wanted in regions:
        return wanted
    for code, name in regions.items():
        if _sort_key(name) == _sort_key(text):  # "Quebec" or "Québec", any case
            return code
    raise AddressError(f"“{text}” is not a region of {country_name(country)}.")


def _sort_key(name: str) -> str:
    """Names sorted as people look for them: "Åland Islands" beside "Albania", not after "Zimbabwe"."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()


def region_name(country: str, code: str) -> str:
    return _regions(country).get(code, code) if code else ""


def region_required(country: str) -> bool:
    return country in REGION_REQUIRED
