"""The example WASM modules (examples/modules/): their committed .wasm files are what their C sources
build to, byte for byte, and each does its job under a plain wasmtime host that speaks the module
ABI (docs/modules.md), with requests and responses that follow schemas/module/. The test modules of
tests/fixtures/modules/, which the runtime's containment tests use, do what their comments say.

The host here is a few lines of wasmtime written for these tests (not aion's runtime, which has
tests of its own), so that a module's behaviour is checked apart from the runtime's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from aion import schemas
from aion.modules.abi import SECRET_ABSENT, SECRET_DENIED, SecretGrant, request_bytes
from tests.rig import install
from tests.rig import wasm as rig
from tests.rig.fuzz import examples

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / "examples" / "modules"
SUMMARIZE = MODULES / "summarize_text"
PII = MODULES / "pii_redact"

REQUEST = Draft202012Validator(schemas.load("module/request"))
RESPONSE = Draft202012Validator(schemas.load("module/response"))

PARAGRAPH = (
    "The James Webb Space Telescope is the largest optical telescope in space. Its high resolution "
    "and sensitivity allow it to view objects too old, distant, or faint for the Hubble Space "
    "Telescope. This enables investigations across many fields of astronomy and cosmology, such as "
    "observation of the first stars and the formation of the first galaxies. The telescope was "
    "launched on 25 December 2021 on an Ariane 5 rocket from Kourou, French Guiana. It arrived at "
    "the Sun-Earth L2 Lagrange point in January 2022. Dr. Smith, who works at NASA, said the mirror "
    "was a triumph of engineering. The primary mirror of the telescope consists of 18 hexagonal "
    "mirror segments made of gold-plated beryllium. Together the segments form a mirror 6.5 meters "
    "in diameter, far larger than the mirror of Hubble. Lunch at the cafeteria was good that day. "
    "The telescope's mirror must be kept extremely cold to observe faint infrared light from "
    "distant galaxies."
)


@pytest.fixture(scope="module", autouse=True)
def _toolchain() -> None:
    rig.require_toolchain()


# -- a minimal WASI host for the module ABI -------------------------------------------------------


@dataclasses.dataclass
class Call:
    status: int
    stdout: bytes
    logs: list[tuple[int, str]]
    trap: str | None = None

    @property
    def response(self) -> dict[str, Any]:
        document = json.loads(self.stdout)
        RESPONSE.validate(document)
        assert isinstance(document, dict)
        return document

    @property
    def output(self) -> dict[str, Any]:
        response = self.response
        assert "output" in response, response
        output = response["output"]
        assert isinstance(output, dict)
        return output


class Host:
    """One engine and linker; each call a new Store with WASI (the request as standard input) and the
    aion imports answering from ``secrets`` as the manifest's ``permissions.secrets`` allow."""

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        self.engine = wasmtime.Engine(config)
        self.modules: dict[Path, wasmtime.Module] = {}
        self._declared: frozenset[str] = frozenset()
        self._values: Mapping[str, str] = {}
        self._logs: list[tuple[int, str]] = []
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        self.linker.define_func(
            "aion", "secret_get", wasmtime.FuncType([i32, i32, i32, i32], [i32]), self._secret_get,
            access_caller=True,
        )  # fmt: skip
        self.linker.define_func(
            "aion", "log", wasmtime.FuncType([i32, i32, i32], []), self._log, access_caller=True
        )
        self.linker.define_func(
            "aion", "now", wasmtime.FuncType([], [i64]), lambda: 1_700_000_000_000_000_000
        )

    @staticmethod
    def _span(caller: wasmtime.Caller, ptr: int, length: int) -> wasmtime.Memory:
        memory = caller.get("memory")
        assert isinstance(memory, wasmtime.Memory)
        if ptr < 0 or length < 0 or ptr + length > memory.data_len(caller):
            raise wasmtime.WasmtimeError(f"pointer {ptr} + {length} is outside the module's memory")
        return memory

    def _secret_get(self, caller: wasmtime.Caller, name_ptr: int, name_len: int, out: int, cap: int) -> int:
        memory = self._span(caller, name_ptr, name_len)
        self._span(caller, out, cap)
        name = bytes(memory.read(caller, name_ptr, name_ptr + name_len)).decode("utf-8", "replace")
        if name not in self._declared:
            return SECRET_DENIED
        value = self._values.get(name)
        if value is None:
            return SECRET_ABSENT
        raw = value.encode()
        if cap and raw:
            memory.write(caller, raw[:cap], out)
        return len(raw)

    def _log(self, caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
        memory = self._span(caller, ptr, length)
        self._logs.append((level, bytes(memory.read(caller, ptr, ptr + length)).decode("utf-8", "replace")))

    def call(
        self,
        wasm: Path,
        request: bytes,
        *,
        declared: frozenset[str] = frozenset(),
        secrets: Mapping[str, str] | None = None,
        fuel: int = 5_000_000_000,
        memory: int = 64 << 20,
    ) -> Call:
        module = self.modules.get(wasm)
        if module is None:
            module = self.modules[wasm] = wasmtime.Module.from_file(self.engine, str(wasm))
        self._declared, self._values, self._logs = declared, secrets or {}, []
        store = wasmtime.Store(self.engine)
        store.set_limits(memory_size=memory)
        store.set_fuel(fuel)
        with tempfile.TemporaryDirectory(prefix="aion-wasm-") as tmp:
            stdin, stdout = Path(tmp) / "stdin", Path(tmp) / "stdout"
            stdin.write_bytes(request)
            wasi = wasmtime.WasiConfig()
            wasi.argv = [wasm.stem]
            wasi.stdin_file = str(stdin)
            wasi.stdout_file = str(stdout)
            store.set_wasi(wasi)
            status, trap = 0, None
            try:
                instance = self.linker.instantiate(store, module)
                start = instance.exports(store)["_start"]
                assert isinstance(start, wasmtime.Func)
                start(store)
            except wasmtime.ExitTrap as exit_trap:
                status = exit_trap.code
            except (wasmtime.Trap, wasmtime.WasmtimeError) as error:
                trap = str(error)
            return Call(status, stdout.read_bytes(), self._logs, trap)


@pytest.fixture(scope="module")
def host() -> Host:
    return Host()


def declared_secrets(module_dir: Path) -> frozenset[str]:
    """The secret names a module's manifest declares (required and optional alike)."""
    manifest = yaml.safe_load((module_dir / "agent.yaml").read_text())
    required, optional = SecretGrant.parse(manifest.get("permissions", {}).get("secrets", []))
    return required | optional


def wasm_of(module_dir: Path) -> Path:
    return module_dir / f"{module_dir.name}.wasm"


def ask(text: str, *, intent: str = "summarize", step: str = "complete") -> bytes:
    """The request aion itself sends (aion.modules.abi.request_bytes), checked against its schema."""
    raw = request_bytes(task_id="01JDTEST0000000000000000", intent=intent, step=step, text=text)
    REQUEST.validate(json.loads(raw))
    return raw


def output_schema(module_dir: Path) -> Draft202012Validator:
    manifest = yaml.safe_load((module_dir / "agent.yaml").read_text())
    return Draft202012Validator(
        json.loads((module_dir / manifest["entrypoints"]["schema"]["output"]).read_text())
    )


def summarize(host: Host, text: str, **secrets: str) -> Call:
    return host.call(wasm_of(SUMMARIZE), ask(text), declared=declared_secrets(SUMMARIZE), secrets=secrets)


def redact(host: Host, text: str) -> Call:
    return host.call(
        wasm_of(PII), ask(text, intent="draft_reply", step="prepare"), declared=declared_secrets(PII)
    )


# -- reproducible builds --------------------------------------------------------------------------


def test_the_committed_modules_are_what_their_sources_build_to() -> None:
    result = subprocess.run(
        [sys.executable, "tools/build_modules.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert {p.parent.name for p in MODULES.glob("*/*.wasm")} >= {"summarize_text", "pii_redact"}


def _copy_tree(target: Path) -> Path:
    (target / "tools").mkdir(parents=True)
    shutil.copy2(REPO / "tools" / "build_modules.py", target / "tools")
    shutil.copytree(MODULES, target / "examples" / "modules")
    return target


def test_a_build_elsewhere_gives_the_same_bytes_and_check_names_a_file_that_differs(tmp_path: Path) -> None:
    # another checkout path (clang sees other absolute paths): still byte-identical
    tree = _copy_tree(tmp_path / "some" / "other checkout")
    check = [sys.executable, str(tree / "tools" / "build_modules.py"), "--check"]
    assert subprocess.run(check, capture_output=True, text=True, check=False).returncode == 0
    wasm = tree / "examples" / "modules" / "pii_redact" / "pii_redact.wasm"
    data = bytearray(wasm.read_bytes())
    data[len(data) // 2] ^= 0x01
    wasm.write_bytes(bytes(data))
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "examples/modules/pii_redact/pii_redact.wasm: differs from a fresh build" in result.stderr
    assert "summarize_text.wasm" not in result.stderr
    wasm.unlink()
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "pii_redact.wasm" in result.stderr


def test_the_modules_carry_no_custom_section() -> None:
    """No name, producers or debug section: nothing of the build machine or the compiler's version."""
    for wasm in (wasm_of(SUMMARIZE), wasm_of(PII)):
        data = wasm.read_bytes()
        assert data[:8] == b"\0asm\x01\0\0\0"
        offset, kinds = 8, []
        while offset < len(data):
            kind = data[offset]
            offset += 1
            size = shift = 0
            while True:
                byte = data[offset]
                offset += 1
                size |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            kinds.append(kind)
            offset += size
        assert 0 not in kinds, f"{wasm.name} has a custom section"
        assert b"/work" not in data
        assert b"clang" not in data


def test_the_rig_builds_with_the_same_command_and_caches(tmp_path: Path) -> None:
    tool = rig.build_modules()
    first = rig.build(SUMMARIZE / "summarize.c", tmp_path)
    assert first.read_bytes() == wasm_of(SUMMARIZE).read_bytes()
    stamp = first.stat().st_mtime_ns
    assert rig.build(SUMMARIZE / "summarize.c", tmp_path) == first
    assert first.stat().st_mtime_ns == stamp  # from the cache, not built again
    assert tool.compile_command([Path("x.c")], Path("x.wasm"))[:1] == ["clang"]


# -- summarize_text -------------------------------------------------------------------------------


def test_summarize_keeps_the_key_sentences_of_a_paragraph_in_order(host: Host) -> None:
    call = summarize(host, PARAGRAPH)
    assert call.status == 0
    assert call.trap is None
    output = call.output
    output_schema(SUMMARIZE).validate(output)
    assert output["sentences"] == 10  # "Dr. Smith" does not end a sentence
    assert output["kept"] == 3
    summary = output["text"]
    assert len(summary) < len(PARAGRAPH) / 2
    assert summary == (
        "The James Webb Space Telescope is the largest optical telescope in space. "
        "The primary mirror of the telescope consists of 18 hexagonal mirror segments made of "
        "gold-plated beryllium. "
        "The telescope's mirror must be kept extremely cold to observe faint infrared light from "
        "distant galaxies."
    )
    assert "Lunch" not in summary
    size = len(PARAGRAPH.encode())
    assert call.logs == [(1, f"summarize_text: kept 3 of 10 sentences ({size} bytes in, {len(summary)} out)")]


def test_summarize_style_secret_changes_the_layout_and_is_never_echoed(host: Host) -> None:
    bullets = summarize(host, PARAGRAPH, SUMMARY_STYLE="bullets")
    lines = bullets.output["text"].split("\n")
    assert len(lines) == 3
    assert all(line.startswith("- The ") for line in lines)
    numbered = summarize(host, PARAGRAPH, SUMMARY_STYLE=" Numbered\n")
    assert [line[:3] for line in numbered.output["text"].split("\n")] == ["1. ", "2. ", "3. "]
    for call, value in ((bullets, "bullets"), (numbered, "Numbered")):
        assert value.encode() not in call.stdout
        assert all(value not in message for _, message in call.logs)
        assert call.logs[0][1].endswith(", laid out as SUMMARY_STYLE asks")
    # an unknown style, no value (-2), and a host that does not grant the name (-1): plain text
    plain = summarize(host, PARAGRAPH).output["text"]
    assert summarize(host, PARAGRAPH, SUMMARY_STYLE="sideways-and-long-" * 4).output["text"] == plain
    denied = host.call(
        wasm_of(SUMMARIZE), ask(PARAGRAPH), declared=frozenset(), secrets={"SUMMARY_STYLE": "bullets"}
    )
    assert denied.output["text"] == plain


def test_summarize_splits_sentences_with_care(host: Host) -> None:
    text = (
        "Mr. J. R. Smith met Prof. Jones at 3.30 p.m. yesterday, i.e. Monday, in the lab. Was it good? "
        "It was!\n\nA heading without a stop\n\nThe end (really).\u3000次の文です。最後の文です。"
    )
    output = summarize(host, text).output
    assert output["sentences"] == 7


def test_summarize_collapses_white_space_and_keeps_unicode(host: Host) -> None:
    text = 'Café "naïve"\tdéjà\n vu \u2014 a \\ backslash and \U0001f600 emoji.'
    assert (
        summarize(host, text).output["text"]
        == 'Café "naïve" déjà vu \u2014 a \\ backslash and \U0001f600 emoji.'
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (b"", "not one JSON document"),
        (b"{not json", "not one JSON document"),
        (b'{"abi":1,"input":{"text":"x"}} trailing', "not one JSON document"),
        (b'{"abi":1,"input":{"text":"\xff"}}', "not one JSON document"),
        (b'{"abi":1,"input":{"text":"\x01"}}', "not one JSON document"),
        (b"[" * 65 + b"]" * 65, "not one JSON document"),
        (b"[]", "not a JSON object"),
        (b'{"input":{"text":"x"}}', '"abi" is not 1'),
        (b'{"abi":2,"input":{"text":"x"}}', '"abi" is not 1'),
        (b'{"abi":1}', 'no "input" object'),
        (b'{"abi":1,"input":"x"}', 'no "input" object'),
        (b'{"abi":1,"input":{}}', "no input.text"),
        (b'{"abi":1,"input":{"text":5}}', "input.text is not a string"),
    ],
)
def test_a_bad_request_is_declined_with_bad_request(host: Host, request_: bytes, message: str) -> None:
    for module in (SUMMARIZE, PII):
        call = host.call(wasm_of(module), request_, declared=declared_secrets(module))
        assert call.status == 0
        assert call.trap is None
        error = call.response["error"]
        assert error["code"] == "BAD_REQUEST"
        assert message in error["message"]


def test_nesting_up_to_64_is_read(host: Host) -> None:
    deep = b'{"abi":1,"input":{"text":"Deep."},"extra":' + b"[" * 63 + b"]" * 63 + b"}"
    assert host.call(wasm_of(SUMMARIZE), deep).output["text"] == "Deep."


def test_escapes_and_duplicate_members_are_read_as_python_reads_them(host: Host) -> None:
    request_ = (
        b'{"abi":1,"input":{"text":"first"},"input":{"te\\u0078t":"Tab\\there, \\"quoted\\", '
        b'\\u00e9, \\ud83d\\ude00, lone \\udc00."}}'
    )
    expected = json.loads(request_)["input"]["text"].replace("\udc00", "\ufffd").replace("\t", " ")
    assert host.call(wasm_of(SUMMARIZE), request_).output["text"] == expected


def test_empty_text_is_declined(host: Host) -> None:
    assert summarize(host, " \n\t ").response["error"]["code"] == "EMPTY_TEXT"


def test_a_request_over_4_mib_is_declined(host: Host) -> None:
    call = summarize(host, "Words. " * (600 << 10))
    assert call.response["error"]["code"] == "INPUT_TOO_LARGE"


def test_summarize_stays_within_its_manifest_limits_on_a_large_text(host: Host) -> None:
    """1.7 MiB of text, with the manifest's memory and the fuel of its cpu x timeout_ms."""
    manifest = yaml.safe_load((SUMMARIZE / "agent.yaml").read_text())
    fuel = int(
        float(manifest["runtime"]["resources"]["cpu"]) * manifest["policies"]["timeout_ms"] * 1_000_000
    )
    memory = int(manifest["runtime"]["resources"]["memory"].removesuffix("Mi")) << 20
    text = " ".join([PARAGRAPH] * 1700)
    call = host.call(
        wasm_of(SUMMARIZE), ask(text), declared=declared_secrets(SUMMARIZE), fuel=fuel, memory=memory
    )
    assert call.trap is None
    output = call.output
    assert output["sentences"] == 17000
    assert output["kept"] == 25


@settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=600))
def test_every_summary_is_made_of_sentences_of_the_text(host: Host, text: str) -> None:
    call = summarize(host, text)
    assert call.status == 0
    assert call.trap is None
    response = call.response
    if "error" in response:
        assert response["error"]["code"] == "EMPTY_TEXT"
        assert not text.strip(" \t\n\r\f\v")
        return
    flat = re.sub(r"[ \t\n\r\f\v]+", " ", text)
    output_schema(SUMMARIZE).validate(response["output"])
    summary = response["output"]["text"]
    assert len(summary) <= len(flat)
    # the kept sentences, in the order of the text: every piece of it is there, in that order
    position = 0
    for piece in summary.split(" "):
        found = flat.find(piece, position)
        assert found >= 0, (piece, flat)
        position = found + len(piece)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
REQUESTS = st.fixed_dictionaries(
    {
        "abi": st.just(1) | JSON_VALUES,
        "input": st.fixed_dictionaries({"text": st.text(max_size=40) | JSON_VALUES}),
    },
    optional={"task_id": JSON_VALUES, "step": JSON_VALUES},
)


@settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200) | st.builds(lambda d: json.dumps(d).encode(), JSON_VALUES | REQUESTS))
def test_any_bytes_get_a_response_and_exit_status_0(host: Host, request_: bytes) -> None:
    for module in (SUMMARIZE, PII):
        call = host.call(wasm_of(module), request_)
        assert call.status == 0
        assert call.trap is None
        call.response  # noqa: B018 - valid JSON of the response schema


# -- pii_redact -----------------------------------------------------------------------------------

PII_CASES: list[tuple[str, str]] = [
    ("Write to jane.doe+news@mail.example.co.uk today.", "Write to [email] today."),
    ("Mail J.Smith@Example.COM.", "Mail [email]."),
    ("Contact jöhn@exämple.com or user@例え.jp", "Contact [email] or [email]"),
    ("Not @handle, not a@b, not x@localhost, not a@b.c", "Not @handle, not a@b, not x@localhost, not a@b.c"),
    ("Call +44 20 7946 0958 now", "Call [phone] now"),
    ("Call +1 (555) 123-4567.", "Call [phone]."),
    ("US (555) 123-4567, 555-123-4567 or 555.123.4567", "US [phone], [phone] or [phone]"),
    ("UK 020 7946 0958 or 0044 20 7946 0958", "UK [phone] or [phone]"),
    ("E.164 +14155550100.", "E.164 [phone]."),
    ("電話\uff1a+81 3-1234-5678。", "電話\uff1a[phone]。"),  # a fullwidth colon before it
    ("Visa 4111 1111 1111 1111, 4111-1111-1111-1111 or 4111111111111111.", "Visa [card], [card] or [card]."),
    ("Amex 3782 822463 10005 and 378282246310005", "Amex [card] and [card]"),
    ("Mastercard 5555555555554444", "Mastercard [card]"),
]
KEPT = [
    "Bad Luhn 4111 1111 1111 1112 and 4111111111111112 and 5555555555554445.",
    "Order 12345678901, in 2024 we sold 1,234,567 units for $3.50 on 2024-01-15 at 12:30.",
    "IP 192.168.100.200, pi 3.14159265358979, ISBN 978-3-16-148410-0, zip 12345-6789.",
    "Codes A5551234567 and 5551234567x and 4111111111111111x are parts of words.",
    "Table: 12 34 56 78 90 12 34 56 and 1 2 3 4 5 6 7 8 9 0 1 2 3.",
    "All zeros 0000 0000 0000 0000 pass Luhn but are no card.",
]


@pytest.mark.parametrize(("text", "expected"), PII_CASES)
def test_pii_redact_replaces_emails_phones_and_cards(host: Host, text: str, expected: str) -> None:
    call = redact(host, text)
    output = call.output
    output_schema(PII).validate(output)
    assert output["text"] == expected
    counts = output["redacted"]
    assert counts == {kind: expected.count(f"[{kind}]") for kind in ("email", "phone", "card")}
    assert call.logs == [
        (1, f"pii_redact: {counts['email']} email, {counts['phone']} phone, {counts['card']} card redacted")
    ]


@pytest.mark.parametrize("text", KEPT)
def test_pii_redact_keeps_invalid_cards_and_ordinary_numbers(host: Host, text: str) -> None:
    output = redact(host, text).output
    assert output["text"] == text
    assert output["redacted"] == {"email": 0, "phone": 0, "card": 0}


def test_an_answer_over_1_mib_is_declined(host: Host) -> None:
    assert redact(host, "x" * (1100 << 10)).response["error"]["code"] == "OUTPUT_TOO_LARGE"


PLAIN_CHARACTERS = st.characters(codec="utf-8", exclude_characters="@0123456789")
"""Any character but digits and "@" (and surrogates, which have no UTF-8 form)."""


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


@settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.text(PLAIN_CHARACTERS, max_size=40),
    after=st.text(PLAIN_CHARACTERS, max_size=40),
    body=st.from_regex(r"4[0-9]{14}", fullmatch=True),
    user=st.from_regex(r"[a-z][a-z0-9._]{0,10}[a-z0-9]", fullmatch=True),
)
def test_text_without_pii_comes_back_unchanged_and_pii_never(
    host: Host, before: str, after: str, body: str, user: str
) -> None:
    # the text around is any Unicode (escapes, controls, quotes, astral planes): read and written back
    assert redact(host, before + after).output["text"] == before + after
    card = body + _luhn_digit(body)
    text = f"{before} {user}@example.org {' '.join(card[i : i + 4] for i in range(0, 16, 4))} {after}"
    output = redact(host, text).output
    assert output["text"] == f"{before} [email] [card] {after}"
    assert card[:8] not in output["text"].replace(" ", "")


# -- the test modules of the runtime's containment tests ------------------------------------------


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    out = tmp_path_factory.mktemp("wasm")
    return lambda name: rig.build(rig.fixture(name), out)


def test_every_test_module_builds(fixtures: Callable[[str], Path]) -> None:
    names = {p.stem for p in rig.FIXTURES.glob("*.c")}
    assert names >= {"badjson", "badptr", "burn", "echo", "exit3", "hugeout", "loop", "membomb", "trap"}
    for name in sorted(names):
        assert fixtures(name).read_bytes()[:4] == b"\0asm"


def test_echo_reports_secret_codes_and_lengths_never_values(
    host: Host, fixtures: Callable[[str], Path]
) -> None:
    echo = fixtures("echo")

    def run(secret: str | None, declared: frozenset[str], values: Mapping[str, str]) -> dict[str, Any]:
        request_ = {
            "abi": 1,
            "task_id": "t",
            "intent": "i",
            "step": "complete",
            "input": {"text": 'hi "you"'},
        }
        if secret is not None:
            request_["input"]["secret"] = secret  # type: ignore[index]
        call = host.call(echo, json.dumps(request_).encode(), declared=declared, secrets=values)
        assert call.logs == [(1, 'hi "you"')]
        for value in values.values():
            assert value.encode() not in call.stdout
        return call.output

    long_value = "v" * 40
    assert run(None, frozenset(), {}) == {"text": 'hi "you"', "now": 1_700_000_000_000_000_000}
    assert run("TOKEN", frozenset({"TOKEN"}), {"TOKEN": "s3cr3t-value"})["secret_len"] == 12
    got = run("TOKEN", frozenset({"TOKEN"}), {"TOKEN": long_value})
    assert (got["secret_rc"], got["secret_len"]) == (40, 40)  # asked again with a larger buffer
    assert "secret_len" not in (denied := run("OTHER", frozenset({"TOKEN"}), {"TOKEN": "s3cr3t-value"}))
    assert denied["secret_rc"] == SECRET_DENIED
    assert run("TOKEN", frozenset({"TOKEN"}), {})["secret_rc"] == SECRET_ABSENT


def test_the_misbehaving_modules_misbehave(host: Host, fixtures: Callable[[str], Path]) -> None:
    request_ = ask("x")
    assert host.call(fixtures("exit3"), request_).status == 3
    trap = host.call(fixtures("trap"), request_)
    assert trap.trap is not None
    assert "unreachable" in trap.trap
    bad = host.call(fixtures("badptr"), request_)
    assert bad.trap is not None
    assert "outside the module's memory" in bad.trap
    assert bad.stdout == b""
    assert host.call(fixtures("badjson"), request_).stdout == b"this is not JSON {\n"
    huge = host.call(fixtures("hugeout"), request_)
    assert len(huge.stdout) > 8 << 20
    assert json.loads(huge.stdout)["output"]["text"] == "x" * (8 << 20)
    loop = host.call(fixtures("loop"), request_, fuel=10_000_000)
    assert loop.trap is not None
    assert "fuel" in loop.trap
    assert host.call(fixtures("burn"), request_, fuel=10_000_000).trap is not None
    assert host.call(fixtures("burn"), request_, fuel=3_000_000_000).output == {"text": "burned"}
    bomb = host.call(fixtures("membomb"), request_, memory=16 << 20)
    assert bomb.trap is not None
    assert "unreachable" in bomb.trap


def test_the_toolchain_check_is_truthful(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rig.toolchain_missing() is None
    monkeypatch.setitem(install.APT_PACKAGES, "wasi-libc", "/nonexistent/wasm32-wasi/libc.a")
    assert rig.toolchain_missing() == "the Debian package wasi-libc not installed"
    monkeypatch.setenv("PATH", os.devnull)
    assert rig.toolchain_missing() == "the Debian packages clang, lld, wasi-libc not installed"
