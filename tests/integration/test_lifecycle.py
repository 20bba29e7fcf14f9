"""aiond's lifecycle in-process: a real grpc.aio server and a real HTTP listener on loopback, with a slow
RPC in flight while the daemon drains, so the documented shutdown order is observed, not assumed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aion.addresses import HostPort
from aion.errors import ConflictError, InputError
from aiond.security.auth import Role, mint
from aiond.serving.server import Daemon, Phase, ServiceBinding
from aiond.settings import Settings
from aiond.state.sqlite import SqliteState
from tests.rig.daemon import EXAMPLES

SLOW_METHOD = "/aion.test.Slow/Wait"


def admin_token(state_dir: Path) -> str:
    """An admin token written into the state directory, as `aiond token create` does."""
    state = SqliteState.open(state_dir)
    try:
        record, text = mint(f"admin-{len(state.tokens())}", Role.ADMIN, created_by="test")
        state.add_token(record)
    finally:
        state.close()
    return text


def slow_call(channel: grpc.aio.Channel, token: str) -> grpc.aio.UnaryUnaryCall[bytes, bytes]:
    """Start one call of the slow method (raw bytes in and out). Methods the daemon's role table does
    not know need the admin role."""

    def raw(data: bytes) -> bytes:
        return data

    method = channel.unary_unary(SLOW_METHOD, request_serializer=raw, response_deserializer=raw)
    return method(b"x", timeout=30, metadata=(("authorization", f"Bearer {token}"),))


class SlowService:
    """A test service whose one method waits until the test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def register(self, server: grpc.aio.Server) -> str:
        async def wait(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            self.entered.set()
            await self.release.wait()
            return b"done:" + request

        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(wait)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("aion.test.Slow", {"Wait": handler})]
        )
        return "aion.test.Slow"


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "config_dir": EXAMPLES,
        "state_dir": tmp_path / "state",
        "grpc_listen": HostPort("127.0.0.1", 0),
        "http_listen": HostPort("127.0.0.1", 0),
        "shutdown_grace": 10.0,
    }
    base.update(overrides)
    return Settings(**base)


def run(scenario: Any) -> None:
    """Run an async scenario; any daemon it registers is shut down even when an assertion fails."""
    daemons: list[Daemon] = []

    async def main() -> None:
        try:
            await scenario(daemons.append)
        finally:
            for daemon in daemons:
                await daemon.shutdown()

    asyncio.run(main())


def test_draining_daemon_answers_but_is_not_ready(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        # A long delay keeps the daemon in steps 1-2 for as long as the assertions take; a forced
        # stop ends it afterwards.
        daemon = Daemon(settings(tmp_path, shutdown_delay=600))
        track(daemon)
        await daemon.startup()
        ready_url = f"http://{daemon.http_address}/readyz"
        async with (
            grpc.aio.insecure_channel(str(daemon.grpc_address)) as channel,
            httpx.AsyncClient() as http,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            assert (await http.get(ready_url)).status_code == 200
            stopping = asyncio.ensure_future(daemon.shutdown())
            await until(lambda: daemon.phase_log[-1] is Phase.DRAINING)
            assert (await http.get(ready_url)).status_code == 503
            assert (await http.get(f"http://{daemon.http_address}/healthz")).status_code == 200
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert not stopping.done()
            daemon.request_stop(force=True)
            await asyncio.wait_for(stopping, 10)
        assert daemon.phase_log == [Phase.STARTING, Phase.SERVING, Phase.DRAINING, Phase.STOPPED]

    run(scenario)


def test_in_flight_call_finishes_before_http_stops(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        slow = SlowService()
        daemon = Daemon(settings(tmp_path), extra_services=[ServiceBinding(slow.register)])
        track(daemon)
        token = admin_token(daemon.settings.state_dir)
        await daemon.startup()
        ready_url = f"http://{daemon.http_address}/readyz"
        async with (
            grpc.aio.insecure_channel(str(daemon.grpc_address)) as channel,
            httpx.AsyncClient() as http,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            call = slow_call(channel, token)
            await asyncio.wait_for(slow.entered.wait(), 10)
            stopping = asyncio.ensure_future(daemon.shutdown())

            # Step 4 has begun once gRPC refuses new calls; the call in flight is still running.
            async def refused() -> bool:
                try:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return True
                return False

            await until_async(refused)
            assert not stopping.done()
            # Step 5 has not: HTTP still answers, and says not ready.
            assert (await http.get(ready_url)).status_code == 503
            slow.release.set()
            assert await call == b"done:x"
            await asyncio.wait_for(stopping, 15)
        assert daemon.phase_log == [Phase.STARTING, Phase.SERVING, Phase.DRAINING, Phase.STOPPED]
        with pytest.raises(httpx.ConnectError):
            httpx.get(ready_url, timeout=2, trust_env=False)

    run(scenario)


async def until(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition`` on the event loop until it holds, or fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def until_async(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_grace_period_cancels_calls_that_do_not_finish(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        slow = SlowService()
        daemon = Daemon(
            settings(tmp_path, shutdown_grace=0.3), extra_services=[ServiceBinding(slow.register)]
        )
        track(daemon)
        token = admin_token(daemon.settings.state_dir)
        await daemon.startup()
        async with grpc.aio.insecure_channel(str(daemon.grpc_address)) as channel:
            call = slow_call(channel, token)
            await asyncio.wait_for(slow.entered.wait(), 10)
            await asyncio.wait_for(daemon.shutdown(), 10)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert daemon.phase is Phase.STOPPED

    run(scenario)


def test_health_watch_ends_with_not_serving_on_shutdown(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        daemon = Daemon(settings(tmp_path))
        track(daemon)
        await daemon.startup()
        async with grpc.aio.insecure_channel(str(daemon.grpc_address)) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            first = await stream.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            stopping = asyncio.ensure_future(daemon.shutdown())
            statuses = []
            while (message := await stream.read()) is not grpc.aio.EOF:
                statuses.append(message.status)
            await asyncio.wait_for(stopping, 5)  # well inside the 10 s grace: the watch did not hold it
            assert statuses
            assert set(statuses) == {health_pb2.HealthCheckResponse.NOT_SERVING}
            assert await stream.code() == grpc.StatusCode.OK

    run(scenario)


def test_a_stopped_daemon_cannot_start_again(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        daemon = Daemon(settings(tmp_path))
        track(daemon)
        await daemon.startup()
        await daemon.shutdown()
        with pytest.raises(RuntimeError, match="phase stopped cannot be started"):
            await daemon.startup()

    run(scenario)


def test_failed_startup_releases_what_it_took(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        first = Daemon(settings(tmp_path))
        track(first)
        await first.startup()
        assert first.grpc_address is not None
        # Same gRPC port, different state dir: HTTP binds and starts, then gRPC fails.
        second = Daemon(
            settings(
                tmp_path, state_dir=tmp_path / "other", grpc_listen=first.grpc_address, shutdown_delay=600
            )
        )
        track(second)
        with pytest.raises(ConflictError, match="address already in use"):
            await second.startup()
        await asyncio.wait_for(second.shutdown(), 5)  # it never served: no drain, no delay
        assert second.phase_log == [Phase.STARTING, Phase.STOPPED]
        assert second.http_address is not None
        # Everything the second daemon took is free again: its HTTP port and its state dir.
        third = Daemon(settings(tmp_path, state_dir=tmp_path / "other", http_listen=second.http_address))
        track(third)
        await third.startup()
        assert third.http_address == second.http_address
        await third.shutdown()
        await first.shutdown()

    run(scenario)


def test_shutdown_is_single_flight(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        daemon = Daemon(settings(tmp_path))
        track(daemon)
        await daemon.startup()
        await asyncio.gather(daemon.shutdown(), daemon.shutdown(), daemon.shutdown())
        assert daemon.phase_log == [Phase.STARTING, Phase.SERVING, Phase.DRAINING, Phase.STOPPED]

    run(scenario)


def test_missing_config_dir_is_an_input_error(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        daemon = Daemon(settings(tmp_path, config_dir=tmp_path / "absent"))
        track(daemon)
        with pytest.raises(InputError, match="does not exist"):
            await daemon.startup()
        await daemon.shutdown()

    run(scenario)


def test_calls_in_flight_are_counted(tmp_path: Path) -> None:
    async def scenario(track: Any) -> None:
        slow = SlowService()
        daemon = Daemon(settings(tmp_path), extra_services=[ServiceBinding(slow.register)])
        track(daemon)
        token = admin_token(daemon.settings.state_dir)
        await daemon.startup()
        async with grpc.aio.insecure_channel(str(daemon.grpc_address)) as channel:
            calls = [slow_call(channel, token) for _ in range(3)]
            await until(lambda: daemon.status().inflight_rpcs == 3)
            slow.release.set()
            assert await asyncio.gather(*calls) == [b"done:x"] * 3
        assert daemon.status().inflight_rpcs == 0
        text = daemon.metrics.exposition().decode()
        assert 'aion_grpc_requests_total{code="OK",method="Wait",service="aion.test.Slow"} 3.0' in text
        await daemon.shutdown()

    run(scenario)
