"""EventService: the daemon's local event log over the API (``aionctl events tail``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from aion.api.v1 import events_pb2, events_pb2_grpc
from aion.errors import Saturated
from aiond.events.journal import Journal, Recorded
from aiond.serving.services.policies import timestamp

SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


def event_message(record: Recorded) -> events_pb2.Event:
    event = record.event
    message = events_pb2.Event(
        id=str(event.get("id", "")),
        topic=str(event.get("topic", "")),
        key=str(event.get("target", "")),
        payload_json=json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode(),
        sequence=record.sequence,
    )
    with contextlib.suppress(ValueError):  # a line without a readable time still carries its payload
        message.time.CopyFrom(timestamp(dt.datetime.fromisoformat(str(event.get("time", "")))))
    return message


MAX_TAILS = 64
"""Streams open at once; each holds a worker-thread read at a time, which validation also needs."""


class EventServicer(events_pb2_grpc.EventServiceServicer):
    def __init__(self, events: Journal) -> None:
        self._events = events
        self._open = 0

    async def TailEvents(
        self, request: events_pb2.TailEventsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[events_pb2.TailEventsResponse]:
        if self._open >= MAX_TAILS:
            raise Saturated(f"{MAX_TAILS} event streams are open", retry_after=1.0, hint="try again later")
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        self._open += 1
        try:
            async for record in self._events.tail(
                topics=list(request.topics), after=request.after_sequence, limit=limit, follow=request.follow
            ):
                yield events_pb2.TailEventsResponse(event=event_message(record))
        finally:
            self._open -= 1


def add_to_server(server: grpc.aio.Server, events: Journal) -> str:
    events_pb2_grpc.add_EventServiceServicer_to_server(EventServicer(events), server)
    return SERVICE_NAME
