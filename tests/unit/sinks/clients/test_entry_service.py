"""The entry service client against a small local aiohttp server playing the service: which
answers are the request's fault (final) and which are the service's (retried, waited out),
and error texts without the service's address."""

from __future__ import annotations

import pytest

from tests.support.services import Answer, scripted_service
from vfstream.dev.stack import free_port
from vfstream.sinks.clients.entry_service import (
    EntryService,
    EntryServiceError,
    EntryServiceRefused,
)

PATH = "/campaigns/c1/scoring"
RECORDS = [{"globalUserId": "g1"}]


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_an_answer_that_blames_the_request_is_a_refusal_and_not_retried(status: int) -> None:
    async with scripted_service() as service:
        service.script[PATH] = [Answer(status, "records[0].email: not an email")]
        with pytest.raises(EntryServiceRefused, match=f"HTTP {status}: records"):
            await EntryService(service.url, attempts=3, max_wait=0.01).post_scoring("c1", RECORDS)
        assert service.hits(PATH) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429, 404, 401, 408])
async def test_any_other_failure_is_the_services_and_retried(status: int) -> None:
    async with scripted_service() as service:
        service.script[PATH] = [Answer(status, "down")]
        with pytest.raises(EntryServiceError) as raised:
            await EntryService(service.url, attempts=2, max_wait=0.01).post_scoring("c1", RECORDS)
        assert not isinstance(raised.value, EntryServiceRefused)
        assert str(raised.value) == f"HTTP {status} (2 attempts)"
        assert service.hits(PATH) == 2


async def test_a_service_not_listening_is_unavailable_without_its_address() -> None:
    port = free_port()
    with pytest.raises(EntryServiceError) as raised:
        await EntryService(f"http://127.0.0.1:{port}", attempts=1).post_scoring("c1", RECORDS)
    assert not isinstance(raised.value, EntryServiceRefused)
    assert str(raised.value) == "ClientConnectorError: Connection refused"


async def test_no_answer_in_time_is_unavailable() -> None:
    async with scripted_service() as service:
        service.hang = lambda path, body: True
        with pytest.raises(EntryServiceError, match=r"^no answer within 0.2 s$"):
            await EntryService(service.url, attempts=1, timeout=0.2).post_scoring("c1", RECORDS)


@pytest.mark.parametrize("body", ['{"inserted": "many"}', '{"inserted": 1e400}', "[1]", "x"])
async def test_an_odd_success_answer_still_counts_the_records_as_sent(body: str) -> None:
    async with scripted_service() as service:
        service.script[PATH] = [Answer(200, body)]
        result = await EntryService(service.url, attempts=1).post_scoring("c1", RECORDS)
    assert (result.sent, result.inserted, result.updated) == (1, 0, 0)
