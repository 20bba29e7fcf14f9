"""What aion's Kafka clients (:class:`aion.kafka.admin.KafkaAdmin`, :class:`aion.kafka.reader.TopicReader`)
share: the settings they add to the connection's, and the errors librdkafka reports only through its
error callback (a refused SASL login among them), kept for the calls to look at."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

MAX_ERRORS = 64
"""Callback errors kept per client (a cluster that is down reports one per attempt)."""

log = logging.getLogger("aion.kafka.client")
log.addHandler(logging.NullHandler())  # not Python's last-resort handler, which would print them


class ReportedErrors:
    """A client's connection facts and the errors its error callback reported."""

    def __init__(self, settings: Mapping[str, str], *, timeout: float) -> None:
        self.where = settings.get("bootstrap.servers", "")
        self.user = settings.get("sasl.username")
        self.timeout = timeout
        self._errors: list[Any] = []

    def options(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``settings`` with the callback, the logger, and a connection set-up bounded by the timeout."""
        return {
            **settings,
            "error_cb": self._record,
            "logger": log,
            "socket.connection.setup.timeout.ms": str(max(1000, int(self.timeout * 1000))),
        }

    def _record(self, error: Any) -> None:
        if len(self._errors) < MAX_ERRORS:
            self._errors.append(error)

    def _reported_auth_error(self) -> Any | None:
        """The first refused login the callback reported, if any."""
        from confluent_kafka import KafkaError

        codes = (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
        return next((e for e in self._errors if e.code() in codes), None)

    def _who(self) -> str:
        return f"SASL user {self.user}" if self.user else "this client"


__all__ = ["MAX_ERRORS", "ReportedErrors", "log"]
