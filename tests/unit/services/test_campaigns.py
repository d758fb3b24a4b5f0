"""The campaign-service client against a small local aiohttp server playing the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.services import Answer, ScriptedService, scripted_service
from vfstream.dev.stack import free_port
from vfstream.services.campaigns import CampaignService, CampaignServiceError


@pytest.fixture
async def service() -> AsyncIterator[tuple[ScriptedService, str]]:
    async with scripted_service() as fake:
        yield fake, fake.url


async def test_campaigns_of_an_event_are_fetched_once_then_cached(service) -> None:
    fake, url = service
    fake.script["/campaigns?eventId=ev%201"] = [Answer(200, '[{"id": "c1", "name": "Tour"}]')]
    client = CampaignService(url, cache_seconds=60)
    assert await client.campaigns_for_event("ev 1") == [{"id": "c1", "name": "Tour"}]
    assert await client.campaigns_for_event("ev 1") == [{"id": "c1", "name": "Tour"}]
    assert fake.hits("/campaigns?eventId=ev%201") == 1 and len(fake.requests) == 1


async def test_server_errors_are_retried_until_an_answer(service) -> None:
    fake, url = service
    fake.script["/campaigns/c1/markets"] = [
        Answer(500, "{}"),
        Answer(503, "{}"),
        Answer(200, '[{"id": "m1"}]'),
    ]
    client = CampaignService(url, attempts=3)
    assert await client.markets("c1") == [{"id": "m1"}]
    assert fake.hits("/campaigns/c1/markets") == 3


async def test_a_service_that_keeps_failing_gives_a_503_after_bounded_attempts(service) -> None:
    fake, url = service
    fake.script["/campaigns?eventId=ev2"] = [Answer(500, "{}")]
    client = CampaignService(url, attempts=2)
    with pytest.raises(CampaignServiceError) as failure:
        await client.campaigns_for_event("ev2")
    assert failure.value.status == 503 and "after 2 attempts" in str(failure.value)
    assert fake.hits("/campaigns?eventId=ev2") == 2


async def test_unknown_campaign_is_a_404_and_not_retried(service) -> None:
    fake, url = service
    client = CampaignService(url)
    with pytest.raises(CampaignServiceError) as failure:
        await client.markets("nope")
    assert failure.value.status == 404
    assert fake.hits("/campaigns/nope/markets") == 1


async def test_an_answer_that_is_not_json_is_a_clear_502(service) -> None:
    fake, url = service
    fake.script["/campaigns?eventId=ev3"] = [Answer(200, "<html>oops</html>")]
    with pytest.raises(CampaignServiceError) as failure:
        await CampaignService(url).campaigns_for_event("ev3")
    assert failure.value.status == 502 and "not JSON" in str(failure.value)


async def test_a_service_that_is_down_gives_a_503() -> None:
    client = CampaignService(f"http://127.0.0.1:{free_port()}", attempts=2, timeout=1)
    with pytest.raises(CampaignServiceError) as failure:
        await client.campaigns_for_event("ev4")
    assert failure.value.status == 503


async def test_the_503_error_does_not_name_the_services_address() -> None:
    port = free_port()
    client = CampaignService(f"http://127.0.0.1:{port}", attempts=1, timeout=1)
    with pytest.raises(CampaignServiceError) as failure:
        await client.campaigns_for_event("ev5")
    assert "127.0.0.1" not in str(failure.value) and str(port) not in str(failure.value)


async def test_the_cache_keeps_at_most_its_size_and_forgets_expired_answers(service) -> None:
    fake, url = service
    fake.fallback = Answer(200, "[]")
    client = CampaignService(url, cache_seconds=0.2, cache_entries=10)
    for n in range(50):
        await client.campaigns_for_event(f"ev-{n}-" + "x" * 7000)
    assert client.cached_answers == 10  # 8,000 distinct ids once grew the worker by 56 MB
    await client.campaigns_for_event("ev-49-" + "x" * 7000)
    assert fake.hits("/campaigns?eventId=ev-49-" + "x" * 7000) == 1  # still cached
    await asyncio.sleep(0.3)
    assert client.cached_answers == 0  # expired entries are gone, not merely ignored
    await client.campaigns_for_event("ev-49-" + "x" * 7000)
    assert fake.hits("/campaigns?eventId=ev-49-" + "x" * 7000) == 2
