"""The `csv` plugin: the streaming scanner (csvscan) behind the plugin interface."""

from __future__ import annotations

from typing import Any, ClassVar

from tusserver.processing.csvscan import CsvFailed, CsvOptions, CsvScanner
from tusserver.processing.plugin import MAX_EXCERPT, Context, Plugin, PluginFailed

DELIMITER_NAMES = {"auto": None, "comma": b",", "semicolon": b";", "tab": b"\t", "pipe": b"|"}


def csv_delimiter(name: str) -> bytes | None:
    """The --csv-delimiter byte (None: auto), or ValueError for anything but one character.
    (--csv-header and --csv-encoding are plain choices, checked with the other settings.)"""
    delimiter = DELIMITER_NAMES[name] if name in DELIMITER_NAMES else name.encode()
    if delimiter is not None and (len(delimiter) != 1 or delimiter in b'"\r\n'):
        raise ValueError(f"must be one ASCII character, not {name!r}")
    return delimiter


def csv_options(settings: Any) -> CsvOptions:
    """Scanner options from the --csv-* settings (validated by tusserver.startup)."""
    delimiter = csv_delimiter(settings.csv_delimiter)
    header = {"auto": None, "yes": True, "no": False}[settings.csv_header]
    return CsvOptions(
        delimiter=delimiter,
        header=header,
        encoding=settings.csv_encoding,
        max_record=settings.csv_max_record,
        max_errors=settings.csv_max_errors,
        infer_types=settings.csv_infer_types,
    )


class CsvPlugin(Plugin):
    """Headers, record and column counts, malformed rows with line numbers, column types."""

    name: ClassVar[str] = "csv"

    def start(self, ctx: Context) -> None:
        super().start(ctx)
        self.scanner = CsvScanner(csv_options(ctx.settings), on_error=self._on_error)

    def _on_error(self, line: int, kind: str, message: str, raw: bytes) -> None:
        """Every malformed row goes to the job's error report (the summary keeps a few)."""
        codec = "latin-1" if self.scanner.encoding == "latin-1" else "utf-8"
        # A row may be megabytes: decode only what can make MAX_EXCERPT characters (a UTF-8
        # character has at most 4 bytes); report() cuts to MAX_EXCERPT.
        head = raw[: 4 * MAX_EXCERPT + 1].removesuffix(b"\r")
        excerpt = head.decode(codec, "backslashreplace")
        self.report(line, kind, message, excerpt)

    def feed(self, chunk: bytes) -> None:
        try:
            self.scanner.feed(chunk)
        except CsvFailed as exc:
            raise PluginFailed(exc.message, exc.line) from None

    def finish(self) -> dict[str, Any]:
        try:
            result = self.scanner.finish()
        except CsvFailed as exc:
            raise PluginFailed(exc.message, exc.line) from None
        result["status"] = "errors" if result["errors_total"] else "ok"
        return result

    def progress(self) -> dict[str, Any]:
        scanner = self.scanner
        records = scanner.records - (1 if scanner.header is not None else 0)
        return {"records": max(records, 0), "errors": scanner.errors_total}
