"""`turnout serve --grpc-port ... --log-format json`: both APIs from one process, JSON log lines; and
`--no-access-log`."""

import json
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.server_thread import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]


def serve(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", "serve", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60, **kwargs)


def test_help_lists_the_observability_options():
    out = serve("--help").stdout
    for option in ("--grpc-port", "--log-format", "--otel-traces", "--no-access-log"):
        assert option in out


def test_bad_grpc_port_is_refused_with_the_value_quoted():
    r = serve("--grpc-port", "70000")
    assert r.returncode == 2 and "70000" in r.stderr and "--grpc-port" in r.stderr


def test_one_process_serves_http_and_grpc_with_json_logs(tmp_path):
    port, grpc_port = free_port(), free_port()
    log = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--grpc-port",
                             str(grpc_port), "--log-format", "json", "--num-threads", "1"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_ready(port, proc, log_path=tmp_path / "stderr")
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", headers={"x-request-id": "e2e-1"},
                       json={"model": "turnout-tiny", "prompt": "x", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in (tmp_path / "stderr").read_text().splitlines() if line.startswith("{")]
    assert lines, "no JSON log lines"
    access = [line for line in lines if line.get("request_id") == "e2e-1"]
    assert len(access) == 1 and access[0]["status"] == "200" and access[0]["completion_tokens"] == 2
    assert any("gRPC API on" in line.get("message", "") for line in lines)


def test_no_access_log_writes_no_access_line(tmp_path):
    port = free_port()
    log = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--log-format", "json",
                             "--num-threads", "1", "--no-access-log"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_ready(port, proc, log_path=tmp_path / "stderr")
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", headers={"x-request-id": "e2e-quiet"},
                       json={"model": "turnout-tiny", "prompt": "x", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in (tmp_path / "stderr").read_text().splitlines() if line.startswith("{")]
    assert any("ready in" in line.get("message", "") for line in lines)  # the server's own lines still come
    assert not [line for line in lines if "request_id" in line]
    assert 'turnout_requests_total{endpoint="/v1/completions",model="turnout-tiny",status="200"} 1.0' in metrics
