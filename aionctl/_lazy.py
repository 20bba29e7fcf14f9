"""A Typer group whose sub-commands are imported only when one of them is used.

Shells run aionctl in loops and on every TAB, so start-up time is part of the interface: ``aionctl
--help`` lists commands from the registry's one-line help without importing any of them, and running
a command imports just that command's module.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.core
import typer.main

from aionctl.commands import BY_NAME, COMMANDS


class SuggestingGroup(typer.core.TyperGroup):
    """A command group that answers a mistyped command with the closest ones ("did you mean")."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        from typer._click.exceptions import UsageError

        from aionctl.usage import did_you_mean

        name = args[0] if args else ""
        # While a TAB is completed (resilient parsing) an unknown word is no error: it offers nothing.
        unknown = name and not name.startswith("-") and self.get_command(ctx, name) is None
        if unknown and not ctx.resilient_parsing:
            error = UsageError(f"No such command '{name}'.", ctx)
            error.suggestion = did_you_mean(name, self.list_commands(ctx))  # type: ignore[attr-defined]
            raise error
        return super().resolve_command(ctx, args)


class LazyGroup(SuggestingGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, Any] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return [spec.name for spec in COMMANDS] + [n for n in super().list_commands(ctx) if n not in BY_NAME]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        spec = BY_NAME.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        if cmd_name not in self._loaded:
            module = importlib.import_module(spec.module)
            command = typer.main.get_command(module.app)
            command.name = spec.name
            if not command.help:
                command.help = spec.help
            self._loaded[cmd_name] = command
        return self._loaded[cmd_name]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(spec.name, spec.help) for spec in COMMANDS]
        rows += [
            (name, cmd.get_short_help_str(limit=formatter.width))
            for name in super().list_commands(ctx)
            if name not in BY_NAME and (cmd := super().get_command(ctx, name)) is not None and not cmd.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


__all__ = ["LazyGroup", "SuggestingGroup"]
