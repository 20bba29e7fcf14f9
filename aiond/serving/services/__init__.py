"""Thin gRPC servicers: each translates between proto messages and daemon or core calls, nothing more."""
