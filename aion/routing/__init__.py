"""The routing decision engine: (config snapshot, request, live provider state) -> Decision or Refusal.

Pure and deterministic: no I/O, no clock, no randomness; the same inputs give the same answer. The
daemon compiles each active snapshot once (:func:`compile_table`), then decides per task with
:meth:`RoutingTable.decide`.
"""

from aion.routing.engine import (
    HYBRID_DEFINITION,
    MAX_CHAIN,
    BreakerState,
    Decision,
    LiveState,
    Refusal,
    Request,
    RoutingTable,
    Target,
    compile_table,
    estimate_input_tokens,
)

__all__ = [
    "HYBRID_DEFINITION",
    "MAX_CHAIN",
    "BreakerState",
    "Decision",
    "LiveState",
    "Refusal",
    "Request",
    "RoutingTable",
    "Target",
    "compile_table",
    "estimate_input_tokens",
]
