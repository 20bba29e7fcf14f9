"""The calls aion makes to a Kafka cluster as an administrator, through confluent-kafka's AdminClient:
read topics, ACLs and consumer offsets, and apply the steps of :mod:`aion.kafka.plans`.

Every failure becomes an aion error, so aionctl exits with its code and no traceback: brokers that
cannot be reached in time are :class:`~aion.errors.DaemonUnavailable` (exit 5), refused credentials
:class:`~aion.errors.Unauthenticated` and a missing grant :class:`~aion.errors.Forbidden` (exit 4),
what the cluster cannot do as asked (too few brokers for a replication factor, a config it refuses)
:class:`~aion.errors.ConflictError` (exit 6). librdkafka reports a refused SASL login only through
its error callback, while the call itself waits for its timeout, so the first call polls in short
steps and stops as soon as the callback has seen one. librdkafka's own log lines go to the
``aion.kafka.client`` logger rather than to stderr.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aion.errors import (
    ConflictError,
    DaemonUnavailable,
    Error,
    Forbidden,
    NotFound,
    ServiceError,
    Stale,
    Unauthenticated,
)
from aion.kafka.client import ReportedErrors
from aion.kafka.plans import Binding, TopicState, TopicStep

MAX_GROUP_PARTITIONS = 100_000
"""The most partitions ``lag`` reports for one group (a bound on what a cluster can make it hold)."""
_AUTH_HINT = (
    "check the SASL user and its password secret (aionctl kafka: --sasl-username, "
    "--sasl-password-secret), or the client certificate"
)


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    """The group's committed offset; None when it has committed none on this partition."""
    low_watermark: int
    high_watermark: int

    @property
    def lag(self) -> int:
        """Records the group has still to read: from its committed offset, or from the oldest record
        kept when it has committed none."""
        start = self.committed if self.committed is not None else self.low_watermark
        return max(0, self.high_watermark - max(start, self.low_watermark))


class KafkaAdmin(ReportedErrors):
    """One AdminClient, made from librdkafka settings (:func:`aion.kafka.config.client_settings`).
    ``timeout`` bounds each call, in seconds. Use it in a ``with`` block (or call :meth:`close`)."""

    def __init__(self, settings: Mapping[str, str], *, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        super().__init__(settings, timeout=timeout)
        self._client = AdminClient(self.options(settings))
        self._probed = False

    def __enter__(self) -> KafkaAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Destroy the client now, its threads joined. Left to the interpreter's shutdown, librdkafka
        threads may still call into Python (the error callback, the logger) while it is torn down."""
        client = self.__dict__.pop("_client", None)
        if client is not None:
            client.poll(0)
            del client

    # -- errors -------------------------------------------------------------------------------------

    def _auth_error(self) -> Any | None:
        self._client.poll(0)  # serves the error callback
        return self._reported_auth_error()

    def _translate(self, exc: BaseException, what: str) -> Error:
        """The aion error for a failed call doing ``what``."""
        from confluent_kafka import KafkaError, KafkaException

        error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        if not isinstance(error, KafkaError):
            return ServiceError(f"Kafka at {self.where}: {what} failed: {exc}")
        code, text = error.code(), error.str()
        auth = self._auth_error()
        if auth is not None or code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
            reason = (auth or error).str()
            return Unauthenticated(
                f"Kafka at {self.where} refused the credentials of {self._who()}: {reason}", hint=_AUTH_HINT
            )
        if code in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED,
        ):
            return Forbidden(
                f"Kafka at {self.where}: {self._who()} may not {what}: {text}",
                hint="act as a principal the cluster lets administer it (a super user, or one with "
                "ALTER and DESCRIBE on the cluster and the topics)",
            )
        if code in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
            KafkaError._RESOLVE,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError.NETWORK_EXCEPTION,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
            KafkaError.NOT_COORDINATOR,
            KafkaError.LEADER_NOT_AVAILABLE,
        ):
            return DaemonUnavailable(
                f"Kafka at {self.where} did not answer in {self.timeout:g}s ({what}): {text}",
                hint="check bootstrap_servers and security.protocol in kafka.yml, and that the brokers "
                "run and are reachable from here; --timeout waits longer",
            )
        if code == KafkaError.TOPIC_ALREADY_EXISTS:
            return Stale(
                f"Kafka at {self.where}: {what}: {text}",
                hint="someone else changed the topics meanwhile: run the command again",
            )
        if code in (
            KafkaError.INVALID_REPLICATION_FACTOR,
            KafkaError.INVALID_PARTITIONS,
            KafkaError.INVALID_CONFIG,
            KafkaError.POLICY_VIOLATION,
            KafkaError.INVALID_REQUEST,
            KafkaError.UNSUPPORTED_VERSION,
        ):
            return ConflictError(
                f"Kafka at {self.where} refused to {what}: {text}",
                hint="a replication factor needs as many brokers; a config must be one the brokers "
                "know and allow: change kafka.yml to what this cluster can do",
            )
        return ServiceError(f"Kafka at {self.where}: {what} failed: {text} ({error.name()})")

    def _wait(self, futures: Mapping[Any, Any], what: str) -> dict[Any, Any]:
        """Every future's result; the first failure as an aion error (the others are still awaited,
        so nothing is left running)."""
        from concurrent.futures import TimeoutError as FutureTimeout

        results: dict[Any, Any] = {}
        failure: Error | None = None
        for key, future in futures.items():
            try:
                results[key] = future.result(timeout=self.timeout + 5)
            except FutureTimeout:
                failure = failure or DaemonUnavailable(
                    f"Kafka at {self.where} did not answer in {self.timeout:g}s ({what})",
                    hint="--timeout waits longer",
                )
            except Exception as exc:  # KafkaException, translated into aion's errors
                failure = failure or self._translate(exc, what)
        if failure is not None:
            raise failure
        return results

    def _probe(self) -> Any:
        """The cluster's metadata; the first call also finds out whether the login works, without
        waiting for the whole timeout when the brokers have refused it."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.timeout
        while True:
            step = self.timeout if self._probed else max(0.1, min(1.0, deadline - time.monotonic()))
            try:
                metadata = self._client.list_topics(timeout=step)
            except KafkaException as exc:
                if self._probed or self._auth_error() is not None or time.monotonic() >= deadline:
                    raise self._translate(exc, "read the cluster's metadata") from exc
                continue
            self._probed = True
            return metadata

    # -- topics -------------------------------------------------------------------------------------

    def topics(self, names: Iterable[str], config_keys: Iterable[str]) -> dict[str, TopicState | None]:
        """Each topic's partitions, replication factor and the values of ``config_keys``; None for a
        topic that does not exist (or that this principal may not see)."""
        from confluent_kafka.admin import ConfigResource, ResourceType

        metadata = self._probe()
        wanted = list(dict.fromkeys(names))
        found: dict[str, TopicState | None] = dict.fromkeys(wanted)
        present = [name for name in wanted if name in metadata.topics and metadata.topics[name].error is None]
        if not present:
            return found
        resources = {name: ConfigResource(ResourceType.TOPIC, name) for name in present}
        futures = self._client.describe_configs(list(resources.values()), request_timeout=self.timeout)
        described = self._wait(dict(zip(present, futures.values(), strict=True)), "read the topics' configs")
        keys = set(config_keys)
        for name in present:
            topic = metadata.topics[name]
            partitions = topic.partitions
            replicas = max((len(p.replicas) for p in partitions.values()), default=0)
            entries = described[name]
            configs = {
                key: str(entry.value)
                for key, entry in entries.items()
                if key in keys and entry.value is not None
            }
            found[name] = TopicState(name, len(partitions), replicas, configs)
        return found

    def apply_topics(self, steps: Sequence[TopicStep]) -> None:
        """Create, grow and configure topics as the steps say (conflicting steps must not be given)."""
        from confluent_kafka.admin import (
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
            NewPartitions,
            NewTopic,
            ResourceType,
        )

        create = [s for s in steps if s.action == "create"]
        if create:
            new = [
                NewTopic(
                    s.name, num_partitions=s.partitions[1], replication_factor=s.replication_factor[1],
                    config={c.key: c.after for c in s.configs},
                )
                for s in create
            ]  # fmt: skip
            self._wait(self._client.create_topics(new, request_timeout=self.timeout), "create topics")
        grow = [
            NewPartitions(s.name, s.partitions[1])
            for s in steps
            if s.action == "change" and s.adds_partitions
        ]
        if grow:
            self._wait(self._client.create_partitions(grow, request_timeout=self.timeout), "add partitions")
        alter = [
            ConfigResource(
                ResourceType.TOPIC, s.name,
                incremental_configs=[
                    ConfigEntry(c.key, c.after, incremental_operation=AlterConfigOpType.SET)
                    for c in s.configs
                ],
            )
            for s in steps
            if s.action == "change" and s.configs
        ]  # fmt: skip
        if alter:
            self._wait(
                self._client.incremental_alter_configs(alter, request_timeout=self.timeout),
                "set topic configs",
            )

    # -- ACLs ---------------------------------------------------------------------------------------

    def acls(self, principals: Iterable[str]) -> list[Binding]:
        """Every binding (allow or deny, any resource) of ``principals``."""
        from confluent_kafka.admin import (
            AclBindingFilter,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        self._probe()
        found: list[Binding] = []
        for principal in principals:
            query = AclBindingFilter(  # None: any resource name, any host
                ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,  # type: ignore[arg-type]
                AclOperation.ANY, AclPermissionType.ANY,
            )  # fmt: skip
            (result,) = self._wait(
                {principal: self._client.describe_acls(query, request_timeout=self.timeout)},
                "read the ACLs",
            ).values()
            found.extend(_binding(acl) for acl in result)
        return found

    def create_acls(self, bindings: Sequence[Binding]) -> None:
        if bindings:
            acls = [_acl(b) for b in bindings]
            self._wait(self._client.create_acls(acls, request_timeout=self.timeout), "create ACLs")

    def delete_acls(self, bindings: Sequence[Binding]) -> None:
        if bindings:
            filters = [_acl(b, exact_filter=True) for b in bindings]
            self._wait(self._client.delete_acls(filters, request_timeout=self.timeout), "delete ACLs")

    # -- consumer lag -------------------------------------------------------------------------------

    def lag(self, group: str) -> list[PartitionLag]:
        """Per partition of the topics the group has committed on: its offset (None where it has
        none) and the partition's watermarks. NotFound when the group has committed nothing."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        self._probe()
        request = [ConsumerGroupTopicPartitions(group)]
        (offsets,) = self._wait(
            self._client.list_consumer_group_offsets(request, request_timeout=self.timeout),
            f"read consumer group {group}'s offsets",
        ).values()
        committed = list(offsets.topic_partitions or [])
        if not committed:
            raise NotFound(
                f"consumer group {group!r} has no committed offsets on Kafka at {self.where}",
                hint="check the group's name; a group that has never committed has no lag to show",
            )
        if len(committed) > MAX_GROUP_PARTITIONS:
            raise ServiceError(
                f"consumer group {group!r} has offsets on {len(committed)} partitions; the limit is "
                f"{MAX_GROUP_PARTITIONS}"
            )
        # Every partition of the topics the group reads: one it has not committed on yet (a
        # partition added later, or one no member has read) is lag too.
        metadata = self._client.list_topics(timeout=self.timeout)
        offsets_of = {(tp.topic, tp.partition): int(tp.offset) for tp in committed}
        for topic in sorted({tp.topic for tp in committed}):
            described = metadata.topics.get(topic)
            for number in sorted(described.partitions) if described is not None else []:
                offsets_of.setdefault((topic, number), -1)
        if len(offsets_of) > MAX_GROUP_PARTITIONS:
            raise ServiceError(
                f"consumer group {group!r} reads {len(offsets_of)} partitions; the limit is "
                f"{MAX_GROUP_PARTITIONS}"
            )
        keys = [TopicPartition(topic, number) for topic, number in offsets_of]
        latest_spec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        earliest_spec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        latest = self._wait(
            self._client.list_offsets(dict.fromkeys(keys, latest_spec), request_timeout=self.timeout),
            "read the partitions' high watermarks",
        )
        earliest = self._wait(
            self._client.list_offsets(dict.fromkeys(keys, earliest_spec), request_timeout=self.timeout),
            "read the partitions' low watermarks",
        )

        def offset_of(results: Mapping[Any, Any], tp: Any) -> int:
            return next(int(info.offset) for key, info in results.items() if (key.topic, key.partition) == tp)

        rows = [
            PartitionLag(
                topic, number, offset if offset >= 0 else None,
                offset_of(earliest, (topic, number)), offset_of(latest, (topic, number)),
            )
            for (topic, number), offset in offsets_of.items()
        ]  # fmt: skip
        return sorted(rows, key=lambda row: (row.topic, row.partition))


# confluent-kafka names the cluster resource BROKER; Kafka's ACLs (and aion's plans) call it CLUSTER.
_TO_KAFKA = {"CLUSTER": "BROKER"}
_FROM_KAFKA = {"BROKER": "CLUSTER"}


def _binding(acl: Any) -> Binding:
    return Binding(
        principal=acl.principal,
        resource_type=_FROM_KAFKA.get(acl.restype.name, acl.restype.name),
        resource=acl.name,
        operation=acl.operation.name,
        pattern=acl.resource_pattern_type.name,
        host=acl.host,
        permission=acl.permission_type.name,
    )


def _acl(binding: Binding, *, exact_filter: bool = False) -> Any:
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    cls = AclBindingFilter if exact_filter else AclBinding
    resource_type = ResourceType[_TO_KAFKA.get(binding.resource_type, binding.resource_type)]
    return cls(
        resource_type, binding.resource, ResourcePatternType[binding.pattern], binding.principal,
        binding.host, AclOperation[binding.operation], AclPermissionType[binding.permission],
    )  # fmt: skip


__all__ = ["MAX_GROUP_PARTITIONS", "KafkaAdmin", "PartitionLag"]
