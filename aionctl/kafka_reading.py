"""The Kafka side of the aionctl commands that read aion's topics back (``audit verify``, ``events
tail --from kafka``): the options that say how to reach the cluster, and the reader made from them.

The options are ``aionctl kafka``'s own, imported from :mod:`aionctl.commands.kafka` (the SASL user
an operator reads as, and the secret backend's options, with their environment variables), plus
``--kafka-config``, the kafka.yml that names the brokers and the topics. These commands talk to
aiond too, so its ``--timeout`` also bounds each call to Kafka: one deadline, one flag.

Nothing is checked or read until a command asks for the reader, so ``events tail --from local`` is
never stopped by a Kafka setting.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aionctl.commands.kafka import (
    BACKEND_OPTIONS,
    DEFAULT_FILE,
    SaslPasswordSecret,
    SaslUsername,
    load_config,
)
from aionctl.options import backend_options

if TYPE_CHECKING:
    from aion.kafka.config import KafkaConfig
    from aion.kafka.reader import TopicReader

KafkaConfigFile = Annotated[
    Path,
    typer.Option("--kafka-config", envvar="AION_KAFKA_CONFIG", metavar="FILE", show_default=False,
                 help="kafka.yml: the brokers, how to log in and the topics' names ('-': standard "
                      "input) [default: $AION_KAFKA_CONFIG, else ./kafka.yml]."),
]  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class KafkaSource:
    """How to reach Kafka, as the command line says (checked only by :func:`open_reader`)."""

    file: Path
    sasl_username: str | None
    sasl_password_secret: str | None
    backend: dict[str, Any]
    """The secret backend's options, as :func:`aionctl.options.backend_options` takes them."""


_ADDED: dict[str, tuple[Any, Any]] = {
    "kafka_config": (KafkaConfigFile, DEFAULT_FILE),
    "sasl_username": (SaslUsername, None),
    "sasl_password_secret": (SaslPasswordSecret, None),
    **BACKEND_OPTIONS,
}


def kafka_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with the Kafka options added; it takes ``kafka: KafkaSource``, which gathers
    them. Apply it under :func:`aionctl.connect.daemon_command`, which adds aiond's options."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "kafka"]
    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [
        inspect.Parameter(key, keyword, default=default, annotation=annotation)
        for key, (annotation, default) in _ADDED.items()
    ]

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        options = {key: kwargs.pop(key) for key in _ADDED}
        source = KafkaSource(
            file=options.pop("kafka_config"),
            sasl_username=options.pop("sasl_username"),
            sasl_password_secret=options.pop("sasl_password_secret"),
            backend=options,
        )
        command(kafka=source, **kwargs)

    run.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    return run


def open_reader(
    ctx: typer.Context, source: KafkaSource, *, timeout: float, purpose: str
) -> tuple[KafkaConfig, TopicReader]:
    """kafka.yml loaded (its warnings on stderr, as ``aionctl kafka`` shows them) and a reader that
    connects as it says, or as ``--sasl-username`` says; the password read through the secret
    backend. Close the reader after use."""
    from aion.kafka.config import client_settings
    from aion.kafka.reader import TopicReader
    from aion.secrets.select import backend_for

    config = load_config(source.file, ctx)
    needs_secret = config.uses_sasl or config.key_password_secret is not None
    secrets = backend_for(backend_options(**source.backend)) if needs_secret else None
    settings = client_settings(
        config, secrets, username=source.sasl_username, password_secret=source.sasl_password_secret
    )
    return config, TopicReader(settings, timeout=timeout, purpose=purpose)


__all__ = ["KafkaConfigFile", "KafkaSource", "kafka_options", "open_reader"]
