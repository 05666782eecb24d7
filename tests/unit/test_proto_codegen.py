"""The committed gRPC stubs are exactly what `python -m server.grpc.codegen` makes from proto/ (CI fails if
someone edits the .proto without regenerating)."""

import re

from server.grpc import codegen

# Lines naming the protoc / grpcio-tools version that made the stubs: another patch release of the tools
# rewrites them without changing the API, so they are compared as placeholders.
_TOOL_VERSION = re.compile(r"^(# Protobuf Python Version: |GRPC_GENERATED_VERSION = |    \d+,$).*$", re.MULTILINE)


def _normalised(text: str) -> str:
    return _TOOL_VERSION.sub(r"\1<version>", text)


def test_generated_stubs_are_up_to_date(tmp_path):
    fresh = {p.name: _normalised(p.read_text()) for p in codegen.generate(tmp_path)}
    committed = {p.name: _normalised(p.read_text()) for p in codegen.OUT_DIR.glob("*_pb2*")}
    assert set(fresh) == set(committed), "stub files differ; run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated stubs {stale}: run `make proto` and commit the result"


def test_every_rpc_and_message_is_commented():
    source = (codegen.PROTO_ROOT / codegen.PROTOS[0]).read_text().splitlines()
    for i, line in enumerate(source):
        stripped = line.strip()
        if stripped.startswith(("rpc ", "message ", "service ", "enum ")):
            assert source[i - 1].strip().startswith("//"), f"line {i + 1} has no comment: {stripped}"
