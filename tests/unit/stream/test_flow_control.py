"""Resuming a flow that is already on must not drop events the agents have queued
(``vfstream.stream.app.QueueKeepingFlowControl``); Faust's own flow control does."""

from __future__ import annotations

from mode.utils.queues import FlowControlEvent, FlowControlQueue

from vfstream.stream.app import QueueKeepingFlowControl


def queued_after_two_resumes(flow: FlowControlEvent) -> int:
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    flow.resume()  # recovery turns the flow on to read changelogs
    queue.put_nowait("an event the fetcher delivered")
    flow.resume()  # ... and again once the stream partitions are sought
    return queue.qsize()


async def test_resuming_a_flowing_app_keeps_the_events_already_queued() -> None:
    assert queued_after_two_resumes(QueueKeepingFlowControl()) == 1


async def test_faust_flow_control_drops_them_which_is_why_it_is_replaced() -> None:
    assert queued_after_two_resumes(FlowControlEvent()) == 0


async def test_resuming_a_suspended_flow_still_clears_the_queues() -> None:
    flow = QueueKeepingFlowControl()
    queue: FlowControlQueue[str] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    flow.resume()
    queue.put_nowait("an event of the generation before the rebalance")
    flow.suspend()
    flow.resume()
    assert queue.qsize() == 0
    assert flow.is_active()
