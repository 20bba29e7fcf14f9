"""``aionctl schema list|show NAME``: the JSON Schemas that ship with aion, for editors and CI.

``show`` prints the schema itself by default (``> file.json`` gives a schema an editor can use);
``-o json|yaml`` wraps it in a ``Schema`` document with its name, as every document aionctl prints
carries ``apiVersion`` and ``kind`` (schema ``output/schema``, which also describes ``SchemaList``).
"""

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
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Schema name, as `aionctl schema list` prints it.")],
    output: Output = OutputFormat.TEXT,
) -> None:
    """Print one schema: by itself (text, for editors and validators), or in a Schema document."""
    schema = schemas.load(name)
    if global_options(ctx).quiet and output is OutputFormat.TEXT:
        return
    rendered = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    emit(document("Schema", {"name": name, "schema": schema}), output, text=lambda: rendered)


def _summary(name: str) -> dict[str, Any]:
    schema = schemas.load(name)
    return {"name": name, "id": schema.get("$id", ""), "title": schema.get("title", "")}
