"""aionctl: the operator CLI of aion. A thin layer over the aion library and the aion.v1 API.

It talks to aiond only over the public API (never by importing aiond), so it works the same against a
local or a remote daemon.
"""
