"""The floor for aiond's overhead: a bare grpc.aio server whose TaskService.SubmitTask posts the task's
text to the provider with aiohttp and answers OK. No auth, no routing, no admission, no events, no
metrics: what any gRPC gateway written on grpcio and aiohttp pays on this machine, measured beside
aiond by ``benchmarks/tasks.py`` so that the part of aiond's overhead that is aion's own can be read
off.

    python benchmarks/_grpcfloor.py ADDR PROVIDER_URL    # prints "ready", serves until SIGTERM
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import grpc

from aion.api.v1 import tasks_pb2, tasks_pb2_grpc

MODEL = "qwen2.5"


class Forwarder(tasks_pb2_grpc.TaskServiceServicer):  # the other methods answer UNIMPLEMENTED
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def SubmitTask(
        self, request: tasks_pb2.SubmitTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tasks_pb2.SubmitTaskResponse:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": request.input.text}],
            "max_tokens": 1024,
        }
        async with self._session.post(self._url, json=body) as answer:
            document = await answer.json()
        response = tasks_pb2.SubmitTaskResponse()
        response.task.status = (
            tasks_pb2.TASK_STATUS_OK if "choices" in document else tasks_pb2.TASK_STATUS_ERROR
        )
        return response


async def main(addr: str, provider_url: str) -> None:
    session = aiohttp.ClientSession(trust_env=False)
    server = grpc.aio.server()
    url = provider_url.rstrip("/") + "/chat/completions"
    forwarder = Forwarder(session, url)  # type: ignore[abstract]  # its other methods are not served
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(forwarder, server)
    server.add_insecure_port(addr)
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)
    await session.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
