import json
import logging

from server.access_log import ACCESS_LOGGER, JsonFormatter, TextFormatter


def access_record(fields: dict) -> logging.LogRecord:
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "access", None, None)
    record.access = fields
    return record


def test_json_access_line_is_one_object_with_the_fields():
    line = JsonFormatter().format(access_record({"request_id": "r1", "status": "200", "latency_s": 0.5}))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "r1" and parsed["status"] == "200" and parsed["latency_s"] == 0.5
    assert parsed["logger"] == ACCESS_LOGGER and parsed["level"] == "info" and parsed["ts"].endswith("Z")


def test_other_records_keep_their_message_in_json():
    record = logging.LogRecord("server.app", logging.WARNING, __file__, 1, "ready in %.1f s", (1.25,), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "ready in 1.2 s"


def test_text_access_line_is_key_value_pairs():
    line = TextFormatter().format(access_record({"request_id": "r1", "status": "200", "latency_s": 0.5}))
    assert line.endswith("turnout.access: request_id=r1 status=200 latency_s=0.5")
