"""Rate limits that every web process on every host shares: DRF throttles and a view decorator.

The counters live in the shared cache (Redis in production, a database table otherwise), never
in process memory, or each of N processes would grant its own budget and the limit would be N
times what the settings say. A budget is a window that opens at a client's first request and
lasts the period (`RATE_LIMIT_* = "<n>/<period>"`); a request over it is refused, not counted,
with the seconds until the window closes. Refusals answer 429 in the API's error shape
(`{"code": "rate_limited", "message": ...}`) with `Retry-After`.

Who counts as one client: the user, whatever authenticated it (session, JWT, API key, OAuth
token: each acts for a user); a credential without a user by its own id; anyone else by source
address (`client_address`).

Which budgets apply: every API request draws on its client's general budget ("user" or
"anon"), and on the budget its route is given in `RATE_LIMIT_ROUTES` (URL name → method →
budget), so the API classes need no throttle of their own. Plain Django views take the
`rate_limit` decorator.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.exceptions import ErrorDetail, Throttled
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from core.locks import cache_database, shared_lock, writes_serialized

logger = logging.getLogger(__name__)

KEY_PREFIX = "ratelimit"
# A budget whose name ends so counts only clients without a user (anonymous order creation).
ANONYMOUS_ONLY_SUFFIX = "_anon"
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SAFE_KEY_PART = re.compile(r"[A-Za-z0-9.:_\-\[\]]{1,100}")


def shared_cache() -> Any:
    return caches["shared"]


# --- who is calling ------------------------------------------------------------------------
def client_address(request: Any) -> str:
    """The caller's address: REMOTE_ADDR, or behind RATE_LIMIT_TRUSTED_PROXY_COUNT proxies the
    address the outermost trusted proxy saw (X-Forwarded-For, counted from the right: entries
    further left are whatever the client chose to send)."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    proxies = settings.RATE_LIMIT_TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    return forwarded[-proxies] if len(forwarded) >= proxies else remote


def client_identity(request: Any) -> tuple[str, bool]:
    """(a cache-safe key part naming the client, whether the client is anonymous)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}", False
    auth = getattr(request, "auth", None)
    for attribute in ("prefix", "id"):
        value = getattr(auth, attribute, None) if auth is not None else None
        if value:
            return f"{type(auth).__name__}:{value}", False
    return f"addr:{client_address(request)}", True


def key_part(value: str) -> str:
    """`value` as it is when it is short and plain, else its digest: cache keys must stay
    short and free of spaces and control characters (a header can hold anything)."""
    if SAFE_KEY_PART.fullmatch(value):
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


# --- budgets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    name: str
    limit: int
    period: int  # seconds


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """ "10/min" → (10, 60); "off", "" or None → None (no limit). DRF's notation: the period's
    first letter decides (s, m, h, d)."""
    if not rate or rate.strip().lower() in {"off", "none"}:
        return None
    count, _, period = rate.partition("/")
    try:
        return int(count), PERIODS[period.strip().lower()[:1]]
    except (ValueError, KeyError):
        raise ValueError(f"Rate {rate!r} is not <requests>/<second|minute|hour|day>") from None


def budget(name: str) -> Budget | None:
    """The budget called `name` in DEFAULT_THROTTLE_RATES, read on each call (tests and
    deployments change settings; DRF's own throttles read them once, at import)."""
    parsed = parse_rate(api_settings.DEFAULT_THROTTLE_RATES.get(name))
    return Budget(name, *parsed) if parsed else None


# --- the shared counter --------------------------------------------------------------------
@contextmanager
def _exclusive(key: str, *, wait: float = 2.0) -> Iterator[None]:
    """The counter's cross-process lock. If it cannot be had in time the caller goes on
    unlocked: a count that may be off by one beats refusing a request because the cache is slow."""
    with shared_lock(f"throttle:{key}", wait=wait, hold=5, required=False) as held:
        if not held:
            logger.warning("Rate limit counter %s stayed locked; counting without the lock", key)
        yield


@dataclass(frozen=True)
class Window:
    count: int  # events counted in the window, this one included if `counted`
    remaining: float  # seconds until the window closes
    counted: bool


def window_count(key: str, *, period: int, limit: int | None = None) -> Window:
    """Count one event in the window of `key`. A window opens at its first event and lasts
    `period` seconds; with `limit`, an event that would go over it is not counted.

    The window's end is stored in the value and compared with `time.time()`, so it holds
    whatever the cache does with expiry; the cache's timeout only clears old windows away.
    """
    cache = shared_cache()
    # On SQLite the transaction holds the write lock: atomic without a lock of its own.
    guard = transaction.atomic(using=cache_database(cache)) if writes_serialized(cache) else _exclusive(key)
    with guard:
        now = time.time()
        window = cache.get(key)
        if not window or window["end"] <= now:
            window = {"end": now + period, "count": 0}
        counted = limit is None or window["count"] < limit
        if counted:
            window["count"] += 1
            cache.set(key, window, timeout=math.ceil(window["end"] - now) + 1)
        return Window(window["count"], window["end"] - now, counted)


def budget_take(budget: Budget, client: str) -> float | None:
    """Take one request from `client`'s share of `budget`: None if allowed, else the seconds
    until the window closes and the client may try again. If the shared cache cannot be
    reached the request is allowed (and logged): a limit must not take the site down with it."""
    key = f"{KEY_PREFIX}:{budget.name}:{key_part(client)}"
    try:
        cache = shared_cache()
        if isinstance(cache, RedisCache):
            return _redis_budget_take(cache, key, budget)
        # A full window is refused on one read, without the lock: a flood costs the cache little.
        current = cache.get(key)
        now = time.time()
        if current and current["end"] > now and current["count"] >= budget.limit:
            return current["end"] - now
        window = window_count(key, period=budget.period, limit=budget.limit)
    except Exception:  # Redis or the database unreachable: fail open, loudly
        logger.exception("Rate limit %s not applied: the shared cache failed", budget.name)
        return None
    return None if window.counted else window.remaining


def _redis_budget_take(cache: RedisCache, key: str, budget: Budget) -> float | None:
    """`budget_take` on Redis, whose INCR is atomic: no lock, two commands a request (read the
    window, count in it), three for the request that opens one. The same windows as
    `window_count`'s, kept in two keys: the window's end (`<key>:end`, compared with
    `time.time()`) and its count (`<key>:n`). Requests over the limit are refused; the count
    they add changes nothing (the window is full either way)."""
    end_key, count_key = f"{key}:end", f"{key}:n"
    ttl = budget.period + 1
    now = time.time()
    found = cache.get_many([end_key, count_key])
    end = found.get(end_key)
    if end is not None and end > now and found.get(count_key, 0) >= budget.limit:
        return end - now
    if end is None:
        # No window: the request that stores the end opens one (`add`: one of racing twins).
        if cache.add(end_key, now + budget.period, timeout=ttl):
            end = now + budget.period
            cache.add(count_key, 0, timeout=ttl)
        else:
            end = cache.get(end_key)
    elif end <= now:
        # A window that closed and has not expired yet: one request (per old end) reopens it.
        if cache.add(f"{key}:reopened:{end!r}", 1, timeout=ttl):
            end = now + budget.period
            cache.set_many({end_key: end, count_key: 0}, timeout=ttl)
        else:
            end = cache.get(end_key)
    if end is None or end <= now:
        return None  # the window is being reopened this very moment: let this one through
    try:
        count = cache.incr(count_key)
    except ValueError:  # the count expired in between: this window's first
        cache.add(count_key, 0, timeout=ttl)
        count = cache.incr(count_key)
    return None if count <= budget.limit else end - now


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def refusal_message(seconds: float) -> str:
    return f"Too many requests; try again in {retry_after(seconds)} s."


# --- DRF -----------------------------------------------------------------------------------
class RateLimited(Throttled):
    """429 `rate_limited`; DRF's handler turns `wait` into `Retry-After`."""

    default_code = "rate_limited"

    def __init__(self, wait: float) -> None:
        super().__init__(wait=retry_after(wait))
        # Throttled's own detail appends "Expected available in ..."; ours says it once.
        self.detail = ErrorDetail(refusal_message(wait), code=self.default_code)


class _SharedThrottle(BaseThrottle):
    def budget_for(self, request: Any, view: Any, anonymous: bool) -> Budget | None:
        raise NotImplementedError

    def allow_request(self, request: Any, view: Any) -> bool:
        client, anonymous = client_identity(request)
        chosen = self.budget_for(request, view, anonymous)
        if chosen is None:
            return True
        wait = budget_take(chosen, client)
        if wait is not None:
            # Raised here rather than returned: DRF's own refusal has its own code and message.
            raise RateLimited(wait)
        return True


class ClientRateThrottle(_SharedThrottle):
    """Every client's general budget: RATE_LIMIT_USER per user, RATE_LIMIT_ANON per address."""

    def budget_for(self, request: Any, view: Any, anonymous: bool) -> Budget | None:
        return budget("anon" if anonymous else "user")


class RouteRateThrottle(_SharedThrottle):
    """The budget RATE_LIMIT_ROUTES gives the route (its URL name) and method, if any."""

    def budget_for(self, request: Any, view: Any, anonymous: bool) -> Budget | None:
        match = getattr(request, "resolver_match", None)
        if match is None:
            return None
        name = settings.RATE_LIMIT_ROUTES.get(match.view_name, {}).get(request.method)
        if name is None or (name.endswith(ANONYMOUS_ONLY_SUFFIX) and not anonymous):
            return None
        return budget(name)


# --- plain Django views --------------------------------------------------------------------
def rate_limited_response(wait: float) -> JsonResponse:
    response = JsonResponse({"code": "rate_limited", "message": refusal_message(wait)}, status=429)
    response["Retry-After"] = str(retry_after(wait))
    return response


def rate_limit(
    name: str,
    *,
    methods: tuple[str, ...] = ("POST",),
    per: str = "client",
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Put a Django view's `methods` on budget `name`, counted per client (`per="client"`: the
    user, else the address) or per source address (`per="address"`). A budget whose name ends
    in "_anon" counts only anonymous callers. Over budget: 429 JSON with Retry-After."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method in methods:
                if per == "address":
                    client, anonymous = f"addr:{client_address(request)}", True
                else:
                    client, anonymous = client_identity(request)
                chosen = budget(name)
                if chosen and (anonymous or not name.endswith(ANONYMOUS_ONLY_SUFFIX)):
                    wait = budget_take(chosen, client)
                    if wait is not None:
                        return rate_limited_response(wait)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
