"""A load generator, run as its own process by ``benchmarks/tasks.py``: it sends chat tasks to one
target at a fixed rate (open loop) or from a fixed number of workers (closed loop), and prints the
latencies as JSON.

Targets:

- ``aiond ADDR TOKEN``: TaskService.SubmitTask with ``wait`` over gRPC (intent summarize, route local);
- ``http URL [KEY]``: an OpenAI-compatible ``POST {URL}/chat/completions``, the same chat aiond sends
  (the stand-in provider directly, or a gateway such as LiteLLM's proxy).

Open loop: request i is sent at ``start + i / rate`` whether or not earlier ones have answered, and its
latency is measured from that moment, so a slow target is not hidden by sending less (no coordinated
omission).

    python benchmarks/_loadgen.py open RATE SECONDS aiond 127.0.0.1:8470 TOKEN
    python benchmarks/_loadgen.py closed WORKERS SECONDS http http://127.0.0.1:9000/v1
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

TEXT = "Summarise the following note for the operator console: the nightly batch finished."
SYSTEM = "Summarise a document for the operator console"
MODEL = "qwen2.5"


async def aiond_caller(
    addr: str, token: str
) -> tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[None]]]:
    import grpc

    from aion.api.v1 import common_pb2, tasks_pb2, tasks_pb2_grpc

    channel = grpc.aio.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)])
    stub = tasks_pb2_grpc.TaskServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)
    request = tasks_pb2.SubmitTaskRequest(
        intent="summarize",
        input=tasks_pb2.TaskInput(text=TEXT),
        hints=tasks_pb2.RoutingHints(route_override=common_pb2.ROUTE_LOCAL),
        wait=True,
    )

    async def call() -> bool:
        try:
            reply = await stub.SubmitTask(request, timeout=30, metadata=metadata)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.task.status == tasks_pb2.TASK_STATUS_OK)

    return call, channel.close


async def http_caller(
    url: str, key: str | None
) -> tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000), timeout=aiohttp.ClientTimeout(total=30), trust_env=False
    )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TEXT}],
        "max_tokens": 1024,
    }

    async def call() -> bool:
        try:
            async with session.post(f"{url}/chat/completions", json=body, headers=headers) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    return call, session.close


async def open_loop(call: Callable[[], Awaitable[bool]], rate: float, seconds: float) -> dict[str, object]:
    latencies: list[float] = []
    failures = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    count = int(rate * seconds)

    async def one(i: int) -> None:
        nonlocal failures
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        ok = await call()
        if ok:
            latencies.append((loop.time() - due) * 1000)
        else:
            failures += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return {"latencies_ms": latencies, "failures": failures, "sent": count}


async def closed_loop(call: Callable[[], Awaitable[bool]], workers: int, seconds: float) -> dict[str, object]:
    done = failures = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def worker() -> None:
        nonlocal done, failures
        while loop.time() < end:
            if await call():
                done += 1
            else:
                failures += 1

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"completed": done, "failures": failures, "seconds": loop.time() - started}


async def main(argv: list[str]) -> int:
    mode, amount, seconds, kind, *target = argv
    if kind == "aiond":
        call, close = await aiond_caller(target[0], target[1])
    else:
        call, close = await http_caller(target[0], target[1] if len(target) > 1 else None)
    for _ in range(20):  # warm connections up
        await call()
    if mode == "open":
        result = await open_loop(call, float(amount), float(seconds))
    else:
        result = await closed_loop(call, int(amount), float(seconds))
    await close()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    started = time.perf_counter()
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
