"""``aionctl explain [RULE]``: what a validation rule checks, why, and how to fix what it reports.

``-o json|yaml`` prints a ``Rule`` document, or a ``RuleList`` without RULE (schema ``output/rule``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from aion.config import rules
from aion.errors import UsageError
from aionctl import completing
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()


@app.command()
def explain(
    ctx: typer.Context,
    rule: Annotated[
        str | None,
        typer.Argument(
            metavar="[RULE]", help="A rule id, for example AION301.", autocompletion=completing.rule_ids
        ),
    ] = None,
    output: Output = OutputFormat.TEXT,
) -> None:
    """Explain a validation rule; without RULE, list them all."""
    if rule is None:
        catalogue = list(rules.RULES.values())
        doc = document("RuleList", {"rules": [_rule_doc(r) for r in catalogue]})
        if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
            emit(
                doc,
                output,
                text=lambda: "".join(f"{r.id}  {r.severity.value:<7}  {r.summary}\n" for r in catalogue),
            )
        return
    found = rules.get(rule)
    if found is None:
        raise UsageError(f"no rule {rule!r}", hint="`aionctl explain` lists the rules")
    if not (global_options(ctx).quiet and output is OutputFormat.TEXT):
        emit(document("Rule", _rule_doc(found)), output, text=found.explain)


def _rule_doc(rule: rules.Rule) -> dict[str, str]:
    return {
        "id": rule.id,
        "name": rule.name,
        "severity": rule.severity.value,
        "summary": rule.summary,
        "doc": rule.explain(),
    }
