"""Generated protobuf and gRPC code for ``aion.v1``; regenerate with ``nox -s proto``, never edit.

Import the modules you need directly (``from aion.api.v1 import admin_pb2``); this package imports
nothing itself, so that the CLI pays for gRPC only in the commands that use it.
"""
