"""Serving: the daemon's lifecycle and its transports (gRPC servicers, HTTP endpoints, interceptors,
listeners and metrics). Nothing here decides anything; it translates and delegates."""
