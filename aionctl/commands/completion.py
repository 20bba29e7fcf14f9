"""``aionctl completion bash|zsh|fish|powershell``: print the script that makes TAB complete aionctl.

The script calls aionctl back on every TAB with ``_AIONCTL_COMPLETE`` set, the completion protocol
of aionctl's Typer application, which completes commands, options and choices, and the values of
arguments from aionctl.completing (rule ids, contexts, intents, installed modules, runbooks) without
loading the heavy parts of aionctl. The committed files in ``completions/`` are this command's output
(``tools/completions.py`` writes them; a test keeps them current).

Installing it, for one user:

    bash        aionctl completion bash > ~/.local/share/bash-completion/completions/aionctl
    zsh         aionctl completion zsh > ~/.zfunc/_aionctl   (with ~/.zfunc on $fpath, before compinit)
    fish        aionctl completion fish > ~/.config/fish/completions/aionctl.fish
    PowerShell  aionctl completion powershell | Out-String | Invoke-Expression   (in $PROFILE)
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from aionctl.options import command_app

app = command_app()

PROG = "aionctl"
COMPLETE_VAR = "_AIONCTL_COMPLETE"
"""The variable the scripts set when they call aionctl back (Typer's ``_{PROG}_COMPLETE``)."""


class Shell(enum.StrEnum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"
    POWERSHELL = "powershell"


def script(shell: Shell) -> str:
    """The completion script for ``shell``, ending in a newline: the one aionctl's Typer application
    prints for ``_AIONCTL_COMPLETE=source_SHELL``, so it speaks the protocol the program answers."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell.value) + "\n"


@app.command()
def completion(
    shell: Annotated[
        Shell, typer.Argument(metavar="SHELL", help="bash, zsh, fish or powershell.", case_sensitive=False)
    ],
) -> None:
    """Print the shell completion script for SHELL (source it, or save it where SHELL looks)."""
    typer.echo(script(shell), nl=False)


__all__ = ["COMPLETE_VAR", "PROG", "Shell", "app", "script"]
