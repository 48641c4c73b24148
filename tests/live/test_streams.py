"""Live status: publishing a change, who may open a stream, and what a stream says.

The ASGI streams are read through Django's AsyncClient (the handler gunicorn's uvicorn workers
run for /live/); the WSGI fallback (runserver, the tests' live server) through the plain Client.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction
from django.test import AsyncClient, Client

from live import services as live
from orders.domain import Actor, Order
from orders.repositories import OrderRepository
from orders.services import order_cancel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _quick_streams(settings: Any) -> None:
    settings.LIVE_POLL_SECONDS = 0.05


def version(channel: str) -> str | None:
    return live.versions([channel])[channel]


# --- publishing ---------------------------------------------------------------------------------
def test_publishing_changes_the_channels_token_every_time() -> None:
    channel = live.order_channel(uuid.uuid4())
    assert version(channel) is None
    live.publish(channel)
    first = version(channel)
    live.publish(channel)
    assert first and version(channel) and version(channel) != first


def test_a_change_inside_a_transaction_is_published_when_it_commits() -> None:
    with transaction.atomic():
        live.publish(live.OPS)
        assert version(live.OPS) is None
    assert version(live.OPS)


def test_a_change_rolled_back_is_not_published() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        live.publish(live.OPS)
        raise RuntimeError("rolled back")
    assert version(live.OPS) is None


def test_publishing_never_breaks_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def set_many(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("the cache is down")

    monkeypatch.setattr(live, "caches", {"shared": Broken()})
    live.publish(live.OPS, live.order_channel(uuid.uuid4()))  # logged, not raised


def test_an_order_change_publishes_its_page_and_ops(
    place: Callable[..., Order], customer: Any, repository: OrderRepository
) -> None:
    order = place(customer=customer)
    channel = live.order_channel(order.id)
    before, ops_before = version(channel), version(live.OPS)
    assert before  # placing it is a change too
    order_cancel(repository=repository, order_id=order.id, actor=Actor(kind="system"), reason="changed")
    assert version(channel) != before and version(live.OPS) != ops_before


# --- who may open a stream --------------------------------------------------------------------
def get_async(client: AsyncClient, url: str) -> Any:
    async def get() -> Any:
        response = await client.get(url)
        if response.streaming:
            await _close(response)
        return response

    return async_to_sync(get)()


async def _close(response: Any) -> None:
    closing = getattr(response.streaming_content, "aclose", None)
    if closing:
        await closing()


def logged_in(user: Any) -> AsyncClient:
    client = AsyncClient()
    client.force_login(user)
    return client


def test_the_order_stream_follows_the_order_page(
    place: Callable[..., Order], customer: Any, other_customer: Any, staff: Any
) -> None:
    order = place(customer=customer)
    url = f"/live/orders/{order.id}/"
    mine = get_async(logged_in(customer), url)
    assert mine.status_code == 200 and mine["Content-Type"] == "text/event-stream"
    assert mine["Cache-Control"] == "no-store"
    assert get_async(logged_in(other_customer), url).status_code == 404
    assert get_async(AsyncClient(), url).status_code == 404
    assert get_async(logged_in(customer), f"/live/orders/{uuid.uuid4()}/").status_code == 404
    assert get_async(logged_in(customer), "/live/orders/not-a-uuid/").status_code == 404
    assert async_to_sync(AsyncClient().post)(url).status_code == 405


def test_a_guest_streams_the_order_placed_in_this_browser(place: Callable[..., Order]) -> None:
    order = place()
    client = Client()
    session = client.session
    session["guest_orders"] = [str(order.id)]
    session.save()
    guest = AsyncClient()
    guest.cookies = client.cookies
    assert get_async(guest, f"/live/orders/{order.id}/").status_code == 200
    assert get_async(AsyncClient(), f"/live/orders/{order.id}/").status_code == 404


def test_the_ops_stream_is_for_whoever_may_see_ops(customer: Any, staff: Any) -> None:
    assert get_async(AsyncClient(), "/live/ops/").status_code == 403
    assert get_async(logged_in(customer), "/live/ops/").status_code == 403
    answer = get_async(logged_in(staff), "/live/ops/")
    assert answer.status_code == 200 and answer["Content-Type"] == "text/event-stream"


def test_pages_name_their_stream_with_the_token_they_were_rendered_with(
    place: Callable[..., Order], customer: Any, staff: Any, client: Client
) -> None:
    order = place(customer=customer)
    client.force_login(customer)
    html = client.get(f"/orders/{order.id}/").content.decode()
    assert (
        f'data-live-stream="/live/orders/{order.id}/?since={version(live.order_channel(order.id))}"' in html
    )
    assert 'id="order-live" data-live-region' in html and "/static/js/live.js" in html
    client.force_login(staff)
    live.publish(live.OPS)
    assert f'data-live-stream="/live/ops/?since={version(live.OPS)}"' in client.get("/ops/").content.decode()


# --- what a stream says ---------------------------------------------------------------------
async def _next_event(events: AsyncIterator[bytes]) -> str:
    """The next chunk that is an event (heartbeat comments are skipped)."""
    while True:
        chunk = (await anext(events)).decode()
        if "event:" in chunk:
            return chunk


def test_the_asgi_stream_sends_each_change(staff: Any) -> None:
    async def watch() -> list[str]:
        client = AsyncClient()
        await client.aforce_login(staff)
        response = await client.get("/live/ops/?since=-")
        events = aiter(response.streaming_content)
        opening = (await anext(events)).decode()
        await sync_to_async(live.publish)(live.OPS)
        first = await _next_event(events)
        await sync_to_async(live.publish)(live.OPS)
        second = await _next_event(events)
        await _close(response)
        return [opening, first, second]

    opening, first, second = async_to_sync(watch)()
    assert opening.startswith("retry: ")
    assert first.startswith("id: ") and "\nevent: change\n" in first
    assert second != first and "\nevent: change\n" in second


def test_a_change_made_before_the_stream_opened_is_sent_at_once(staff: Any) -> None:
    """The page was rendered with an older token (`since`): the stream says so straight away."""

    async def watch() -> str:
        client = AsyncClient()
        await client.aforce_login(staff)
        response = await client.get("/live/ops/?since=token-of-the-render")
        events = aiter(response.streaming_content)
        await anext(events)
        event = await _next_event(events)
        await _close(response)
        return event

    live.publish(live.OPS)
    assert f"data: {version(live.OPS)}\n" in async_to_sync(watch)()


def test_a_reconnect_resumes_from_the_last_event_it_saw(staff: Any) -> None:
    live.publish(live.OPS)
    seen = version(live.OPS)

    async def watch() -> list[str]:
        client = AsyncClient()
        await client.aforce_login(staff)
        # The browser sends the last id it got; the page's older `since` no longer counts.
        response = await client.get("/live/ops/?since=older", headers={"Last-Event-ID": seen})
        events = aiter(response.streaming_content)
        await anext(events)
        await sync_to_async(live.publish)(live.OPS)
        event = await _next_event(events)
        await _close(response)
        return event

    event = async_to_sync(watch)()
    assert f"data: {version(live.OPS)}\n" in event and version(live.OPS) != seen


def test_the_stream_ends_by_itself_and_sends_heartbeats(staff: Any, settings: Any) -> None:
    settings.LIVE_HEARTBEAT_SECONDS = 0.01
    settings.LIVE_STREAM_SECONDS = 0.3

    async def watch() -> list[str]:
        client = AsyncClient()
        await client.aforce_login(staff)
        response = await client.get("/live/ops/")
        return [chunk.decode() async for chunk in response.streaming_content]

    chunks = async_to_sync(watch)()
    assert chunks[0].startswith("retry: ") and ": keep-alive\n\n" in chunks


def test_the_wsgi_stream_sends_each_change_too(client: Client, staff: Any) -> None:
    client.force_login(staff)
    response = client.get("/live/ops/?since=-")
    assert response["Content-Type"] == "text/event-stream"
    events: Iterator[bytes] = iter(response.streaming_content)
    assert next(events).decode().startswith("retry: ")
    live.publish(live.OPS)
    chunk = next(events).decode()
    while "event:" not in chunk:
        chunk = next(events).decode()
    assert f"data: {version(live.OPS)}\n" in chunk
    response.close()
