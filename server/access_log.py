"""Log formats: `--log-format json` writes every log record, access lines included, as one JSON object per
line; `text` keeps the usual human format. Access lines carry their fields in `record.access`."""

from __future__ import annotations

import json
import logging
import time

ACCESS_LOGGER = "turnout.access"


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
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if access is not None:
            record.msg, record.args = " ".join(f"{k}={v}" for k, v in access.items()), None
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
