"""Policy: versioned config sets, validated (in a worker process) before they are activated."""
