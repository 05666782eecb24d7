"""HttpLimits (server/http/limits.py) refuses a value outside its bounds, quoting it, and `turnout serve`
passes its flags through it (comma-separated or repeated origins for CORS)."""

import argparse

import pytest

from server.cli import add_limit_flags, allowed_origins, http_limits
from server.http.limits import HttpLimits


@pytest.mark.parametrize(("field", "value"), [
    ("max_body_bytes", 0), ("max_header_bytes", -1), ("max_header_count", 0), ("max_connections", 0),
    ("max_body_bytes", 1.5), ("max_connections", True),
    ("header_timeout", 0), ("body_timeout", -1.0), ("keep_alive_timeout", float("inf")),
    ("header_timeout", float("nan")),
])
def test_a_value_out_of_bounds_is_refused_with_the_value_quoted(field, value):
    with pytest.raises(ValueError) as refused:
        HttpLimits(**{field: value})
    assert field in str(refused.value) and repr(value) in str(refused.value)


def test_the_defaults_hold():
    limits = HttpLimits()
    assert limits.max_body_bytes == 8 * 2**20 and limits.max_header_bytes == 32 * 2**10
    assert limits.header_timeout < limits.body_timeout


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_limit_flags(parser)
    return parser.parse_args(argv)


def test_the_flags_become_the_limits():
    args = parsed("--max-body-bytes", "100", "--max-header-bytes", "2000", "--max-header-count", "7",
                  "--header-timeout", "1.5", "--body-timeout", "2", "--keep-alive-timeout", "3",
                  "--max-connections", "9")
    assert http_limits(args) == HttpLimits(max_body_bytes=100, max_header_bytes=2000, max_header_count=7,
                                           header_timeout=1.5, body_timeout=2.0, keep_alive_timeout=3.0,
                                           max_connections=9)
    assert http_limits(parsed()) == HttpLimits()


def test_origins_are_comma_separated_or_repeated_and_none_by_default():
    args = parsed("--allowed-origins", "http://a.example, http://b.example", "--allowed-origins", "http://c.example")
    assert allowed_origins(args.allowed_origins) == ["http://a.example", "http://b.example", "http://c.example"]
    assert allowed_origins(parsed().allowed_origins) == []
