"""Log formats: `--log-format json` writes every log record, access lines included, as one JSON object per
line; `text` keeps the usual human format. Access lines carry their fields in `record.access`.

Fields hold what clients sent (request ids), so neither format lets a value end its line or pose as
another field: JSON escapes every line break, and a text field that is not a plain token is quoted.
"""

from __future__ import annotations

import json
import logging
import re
import time

ACCESS_LOGGER = "turnout.access"

_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9._:/@+-]+")
# json.dumps escapes every control character; these also end a line for str.splitlines() and friends.
_UNESCAPED_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def text_value(value) -> str:
    """A field value as one unambiguous text token: as is when it is a plain token, else a quoted JSON
    string (ASCII only, so quotes, backslashes, spaces, `=`, control and non-printable characters are all
    escaped) that `json.loads` reads back."""
    text = str(value)
    if _PLAIN_TOKEN.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=True)


def text_fields(fields: dict) -> str:
    return " ".join(f"{key}={text_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if access is not None:
            line.update(access)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str).translate(_UNESCAPED_LINE_BREAKS)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is not None:
            record.msg, record.args = text_fields(access), None
        return super().format(record)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Root handler on stderr in the chosen format; uvicorn's own loggers go through it too."""
    if log_format not in ("json", "text"):
        raise ValueError(f"log_format must be 'json' or 'text', got {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def log_access(fields: dict) -> None:
    logging.getLogger(ACCESS_LOGGER).info("access", extra={"access": fields})
