"""``aionctl install REF``: the runbook's spelling of ``aionctl module install``."""

from __future__ import annotations

from aionctl.commands.module import install_command
from aionctl.options import command_app

app = command_app()
app.command("install")(install_command)
