"""Events: the daemon's one event sink (audit, decisions, task lifecycle) and its local log."""
