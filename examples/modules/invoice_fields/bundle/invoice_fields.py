#!/usr/bin/python3 -I
"""invoice_fields: the fields of an invoice's text, as an aion subprocess module (docs/modules.md).

Reads one request on standard input and answers on standard output with the invoice number, the
invoice date (ISO 8601), the total (a decimal string), its currency (ISO 4217) and the vendor. Each
field is looked for after its usual labels ("Invoice No.", "Date", "Amount due", "From", and their
German, French, Spanish and Italian forms); the total prefers the most final label ("Amount due"
over "Total", never "Subtotal" or a tax line) and its last occurrence, the date prefers the issue
date to any other, and the vendor falls back to the invoice's first line that is not a heading or a
label. A text with neither an invoice number nor a total is declined (INPUT_NOT_AN_INVOICE).

Output: {"text": the fields as compact JSON (what a model sees on the hybrid route), the five
fields (null when not found), "missing": the names not found}. One log line says how many were
found. Only the standard library; every pattern is linear in the text.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from decimal import Decimal, InvalidOperation

MAX_REQUEST = 8 << 20
FIELDS = ("invoice_number", "date", "total", "currency", "vendor")

NUMBER_LABEL = re.compile(
    r"(?:\b(?:invoice|inv|bill|rechnung|facture|factura|fattura)\s*"
    r"(?:no\b\.?|number|num\b\.?|nr\b\.?|n[°º]\.?|#|id\b|-?nummer)|\brechnungsnummer\b)"
    r"\s*[:.]?\s*#?\s*(?P<value>[A-Za-z0-9][A-Za-z0-9\-/._]{0,40})",
    re.IGNORECASE,
)
NUMBER_BARE = re.compile(
    r"\binvoice\s*[:#]\s*#?\s*(?P<value>[A-Za-z0-9][A-Za-z0-9\-/._]{0,40})", re.IGNORECASE
)

DATE_LABELS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:invoice|issue|billing)\s+date\b|\bdate\s+of\s+(?:issue|invoice)\b|\bissued(?:\s+on)?\b"
        r"|\brechnungsdatum\b|\bdate\s+de\s+(?:la\s+)?facture\b|\bfecha\s+de\s+(?:emisi[oó]n|factura)\b"
        r"|\bdata\s+(?:della\s+)?fattura\b",
        r"\b(?:date|datum|fecha|data)\b",
    )
]
DUE = re.compile(r"\b(?:due|payable|f[aä]llig|[ée]ch[ée]ance|vencimiento|scadenza)\b", re.IGNORECASE)
MONTHS = {
    name: number
    for number, names in enumerate(
        (
            "january jan januar janvier enero gennaio",
            "february feb februar fevrier février febrero febbraio",
            "march mar märz maerz mars marzo",
            "april apr avril abril aprile",
            "may mai mayo maggio",
            "june jun juni juin junio giugno",
            "july jul juli juillet julio luglio",
            "august aug aout août agosto",
            "september sep sept septembre septiembre settembre",
            "october oct oktober octobre octubre ottobre",
            "november nov novembre noviembre",
            "december dec dezember décembre decembre diciembre dicembre",
        ),
        start=1,
    )
    for name in names.split()
}
MONTH = r"(?P<month_name>[A-Za-zéèûäà]{3,10})\.?"
DATE_FORMS = [
    re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"),
    re.compile(r"\b(?P<a>\d{1,2})(?P<sep>[./-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})\b"),
    re.compile(rf"\b{MONTH}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y>\d{{4}})\b"),
    re.compile(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\.?\s+{MONTH}\s+(?P<y>\d{{4}})\b"),
]

TOTAL_LABELS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:amount|balance|total)\s+(?:now\s+)?due\b|\bzahlbetrag\b|\bnet\s+[àa]\s+payer\b|\bmontant\s+d[ûu]\b",
        r"\bgrand\s+total\b|\btotal\s+(?:amount|payable)\b|\binvoice\s+total\b|\bgesamtbetrag\b|\bendbetrag\b"
        r"|\bmontant\s+total\b|\btotal\s+ttc\b|\bimporte\s+total\b|\btotale\s+(?:fattura|documento)\b",
        r"\btotal\b|\bsumme\b|\btotale\b",
    )
]
NOT_TOTAL = re.compile(
    r"\b(?:sub\s*-?\s*total|subtotal|zwischensumme|sous-total|total\s+(?:tax|vat|ht|net|excl|before)"
    r"|(?:tax|vat|mwst|ust|tva|iva)\b)",
    re.IGNORECASE,
)
SYMBOLS = {
    "US$": "USD", "CA$": "CAD", "C$": "CAD", "A$": "AUD", "AU$": "AUD", "$": "USD", "€": "EUR", "£": "GBP",
    "¥": "JPY", "₹": "INR", "Fr.": "CHF", "zł": "PLN",
}  # fmt: skip
CODES = frozenset(
    {
        "EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK", "PLN", "CZK", "HUF",
        "RON", "BGN", "INR", "CNY", "HKD", "SGD", "ZAR", "BRL", "MXN", "TRY", "ILS", "AED", "SAR", "KRW",
    }
)  # fmt: skip
CURRENCY = r"(?:US\$|CA\$|AU\$|C\$|A\$|[$€£¥₹]|Fr\.|zł|\b(?:" + "|".join(sorted(CODES)) + r")\b)"
AMOUNT = re.compile(
    rf"(?P<before>{CURRENCY})?\s?(?P<number>-?\d{{1,3}}(?:[ ,.'\u00a0\u202f]\d{{3}})+(?:[.,]\d{{1,2}})?"
    rf"|-?\d+(?:[.,]\d{{1,2}})?)(?!\d)\s?(?P<after>{CURRENCY}|euros?\b)?",
    re.IGNORECASE,
)
WORD_CURRENCY = {"euro": "EUR", "euros": "EUR", "dollars": "USD", "pounds": "GBP"}

VENDOR_LABEL = re.compile(
    r"^\s*(?:from|vendor|seller|supplier|sold\s+by|issued\s+by|bill(?:ed)?\s+from|payee|company|"
    r"lieferant|verk[äa]ufer|fournisseur|vendeur|proveedor|emisor|fornitore)\s*[:\-]\s*(?P<value>.*)$",
    re.IGNORECASE,
)
HEADING = re.compile(
    r"^\s*(?:tax\s+|commercial\s+|pro[\s-]?forma\s+)?(?:invoice|rechnung|facture|factura|fattura|bill)\b"
    r"|^\s*(?:bill\s+to|ship\s+to|customer|client|sold\s+to|date|due|page|kunde|to)\b",
    re.IGNORECASE,
)


def invoice_number(text: str) -> str | None:
    for pattern in (NUMBER_LABEL, NUMBER_BARE):
        for match in pattern.finditer(text):
            value = match.group("value").rstrip("._-/")
            if any(c.isdigit() for c in value) and not DATE_FORMS[0].fullmatch(value):
                return value
    return None


def _date(match: re.Match[str], day_first: bool) -> dt.date | None:
    groups = match.groupdict()
    try:
        year = int(groups["y"])
        if groups.get("month_name"):
            month = MONTHS.get(groups["month_name"].lower().rstrip("."))
            if month is None:
                return None
            return dt.date(year, month, int(groups["d"]))
        if groups.get("a"):
            a, b = int(groups["a"]), int(groups["b"])
            if groups["sep"] == "." or a > 12:
                day_first = True
            elif b > 12:
                day_first = False
            return dt.date(year, b, a) if day_first else dt.date(year, a, b)
        return dt.date(year, int(groups["m"]), int(groups["d"]))
    except ValueError:
        return None


def _dates_in(line: str, day_first: bool) -> list[dt.date]:
    found = []
    for pattern in DATE_FORMS:
        for match in pattern.finditer(line):
            date = _date(match, day_first)
            if date is not None:
                found.append((match.start(), date))
    return [date for _, date in sorted(found, key=lambda item: item[0])]


def invoice_date(lines: list[str], day_first: bool) -> str | None:
    for label in DATE_LABELS:
        for index, line in enumerate(lines):
            match = label.search(line)
            if match is None or DUE.search(line[: match.end()]):
                continue
            rest = line[match.end() :]
            dates = _dates_in(rest, day_first) or (
                _dates_in(lines[index + 1], day_first)
                if index + 1 < len(lines) and not rest.strip(" :")
                else []
            )
            if dates:
                return dates[0].isoformat()
    for line in lines:
        if not DUE.search(line):
            dates = _dates_in(line, day_first)
            if dates:
                return dates[0].isoformat()
    return None


def _number(raw: str) -> tuple[Decimal, bool] | None:
    """The value of an amount as written, and whether it had a fractional part."""
    digits = raw.replace("\u00a0", "").replace("\u202f", "").replace("'", "").replace(" ", "")
    sign = "-" if digits.startswith("-") else ""
    digits = digits.lstrip("-")
    if "." in digits and "," in digits:
        point: str | None = "." if digits.rfind(".") > digits.rfind(",") else ","
    elif "." in digits or "," in digits:
        separator = "." if "." in digits else ","
        # one separator before exactly three digits (1,234 or 1.234) groups thousands
        single = digits.count(separator) == 1 and len(digits.rsplit(separator, 1)[1]) != 3
        point = separator if single else None
    else:
        point = None
    whole, fraction = digits.rsplit(point, 1) if point else (digits, "")
    try:
        value = Decimal(sign + whole.replace(".", "").replace(",", "") + ("." + fraction if fraction else ""))
    except InvalidOperation:
        return None
    return value, bool(fraction)


def _currency(token: str | None) -> str | None:
    if not token:
        return None
    if token.upper() in CODES:
        return token.upper()
    return SYMBOLS.get(token) or WORD_CURRENCY.get(token.lower())


def total(lines: list[str]) -> tuple[str | None, str | None]:
    """The amount after the most final total label (its last occurrence), and its currency."""
    for label in TOTAL_LABELS:
        best: tuple[str, str | None] | None = None
        for line in lines:
            match = label.search(line)
            if match is None or NOT_TOTAL.search(line[: match.end()]):
                continue
            amounts = []
            for amount in AMOUNT.finditer(line, match.end()):
                parsed = _number(amount.group("number"))
                if parsed is not None and not _looks_like_date(line, amount):
                    currency = _currency(amount.group("before")) or _currency(amount.group("after"))
                    amounts.append((currency is not None, parsed[1], parsed, currency))
            if amounts:
                # "Total (3 items): 1,200.00 EUR": the amount with a currency, else with cents, else the last
                _, _, (value, cents), currency = max(reversed(amounts), key=lambda a: (a[0], a[1]))
                best = (f"{value:.2f}" if cents else str(value), currency)
        if best is not None:
            return best
    return None, None


def _looks_like_date(line: str, amount: re.Match[str]) -> bool:
    return any(p.search(line, max(0, amount.start() - 3), amount.end() + 8) for p in DATE_FORMS[:2])


def currency_anywhere(text: str) -> str | None:
    match = re.search(CURRENCY, text)
    if match:
        return _currency(match.group(0))
    word = re.search(r"\b(euros?|dollars|pounds)\b", text, re.IGNORECASE)
    return WORD_CURRENCY[word.group(1).lower()] if word else None


def vendor(lines: list[str]) -> str | None:
    for index, line in enumerate(lines):
        match = VENDOR_LABEL.match(line)
        if match:
            value = match.group("value").strip() or (
                lines[index + 1].strip() if index + 1 < len(lines) else ""
            )
            if value:
                return _clean_vendor(value)
    for line in lines[:12]:
        stripped = line.strip()
        if (
            stripped
            and any(c.isalpha() for c in stripped)
            and not HEADING.match(stripped)
            and ":" not in stripped
        ):
            return _clean_vendor(stripped)
    return None


def _clean_vendor(value: str) -> str:
    return re.split(r"\s{2,}|\t| \| ", value.strip())[0][:200]


def extract(text: str) -> dict[str, str | None]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    amount, currency = total(lines)
    currency = currency or currency_anywhere(text)
    # Slashes are month first in US dollars, day first otherwise (dots and dashes: always day first).
    day_first = currency != "USD"
    return {
        "invoice_number": invoice_number(text),
        "date": invoice_date(lines, day_first),
        "total": amount,
        "currency": currency,
        "vendor": vendor([line for line in lines if line.strip()]),
    }


def log(message: str) -> None:
    """One line to aion's log over the host-call socket, when there is one (not run by aion: none)."""
    fd = os.environ.get("AION_HOST_FD")
    if not fd:
        return
    try:
        with os.fdopen(int(fd), "r+b", buffering=0, closefd=False) as host:
            host.write(json.dumps({"call": "log", "level": 0, "message": message}).encode() + b"\n")
            while host.read(1) not in (b"\n", b""):
                pass
    except (OSError, ValueError):
        pass


def respond(document: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
    sys.stdout.flush()


def main() -> None:
    raw = sys.stdin.buffer.read(MAX_REQUEST + 1)
    try:
        request = json.loads(raw)
        text = request["input"]["text"]
        if len(raw) > MAX_REQUEST or not isinstance(text, str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        respond({"error": {"code": "INPUT_INVALID", "message": "the request has no input.text string"}})
        return
    fields = extract(text)
    if fields["invoice_number"] is None and fields["total"] is None:
        respond(
            {"error": {"code": "INPUT_NOT_AN_INVOICE", "message": "no invoice number and no total found"}}
        )
        return
    missing = [name for name in FIELDS if fields[name] is None]
    log(f"found {len(FIELDS) - len(missing)} of {len(FIELDS)} fields")
    summary = json.dumps(
        {k: v for k, v in fields.items() if v is not None}, ensure_ascii=False, separators=(",", ":")
    )
    respond({"output": {"text": summary, **fields, "missing": missing}})


if __name__ == "__main__":
    main()
