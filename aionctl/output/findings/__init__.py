"""Renderers of validation findings; one module per format, chosen here and imported only when it
renders (the commands that offer these formats name them in their options, which must stay cheap)."""

from __future__ import annotations

from typing import assert_never

from aionctl.output.findings.interface import FindingsFormat, Rendering


def render(rendering: Rendering, fmt: FindingsFormat, *, color: bool = False, quiet: bool = False) -> str:
    from aionctl.output.findings import github, json_, junit, sarif, text

    match fmt:
        case FindingsFormat.TEXT:
            return text.render(rendering, color=color, quiet=quiet)
        case FindingsFormat.JSON:
            return json_.render(rendering)
        case FindingsFormat.YAML:
            import yaml

            return str(yaml.safe_dump(json_.document(rendering), sort_keys=False, allow_unicode=True))
        case FindingsFormat.SARIF:
            return sarif.render(rendering)
        case FindingsFormat.GITHUB:
            return github.render(rendering)
        case FindingsFormat.JUNIT:
            return junit.render(rendering)
        case _:
            assert_never(fmt)


__all__ = ["FindingsFormat", "Rendering", "render"]
