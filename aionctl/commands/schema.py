"""``aionctl schema list|show NAME``: the JSON Schemas that ship with aion, for editors and CI."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from aion import schemas
from aionctl.options import Output, command_app, global_options
from aionctl.output import OutputFormat, document, emit

app = command_app()
app.info.help = "Print the JSON Schemas that ship with aion."


@app.command("list")
def list_schemas(ctx: typer.Context, output: Output = OutputFormat.TEXT) -> None:
    """List the packaged schemas: name, $id and title."""
    rows = [_summary(name) for name in schemas.names()]
    if global_options(ctx).quiet and output is OutputFormat.TEXT:
        return
    width = max((len(r["name"]) for r in rows), default=0)
    emit(
        document("SchemaList", {"schemas": rows}),
        output,
        text=lambda: "".join(f"{r['name']:<{width}}  {r['title']}\n" for r in rows),
    )


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Schema name, as `aionctl schema list` prints it.")],
    output: Output = OutputFormat.JSON,
) -> None:
    """Print one schema (JSON by default; text is the same JSON)."""
    schema = schemas.load(name)
    rendered = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    emit(schema, OutputFormat.JSON if output is OutputFormat.TEXT else output, text=lambda: rendered)


def _summary(name: str) -> dict[str, Any]:
    schema = schemas.load(name)
    return {"name": name, "id": schema.get("$id", ""), "title": schema.get("title", "")}
