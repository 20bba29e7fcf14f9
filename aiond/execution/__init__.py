"""Execution: admitting and running tasks (admission, the daily budget, breakers, the runtime levers,
the executor and the task store)."""
