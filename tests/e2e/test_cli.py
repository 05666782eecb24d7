"""`turnout serve` as a user runs it: a subprocess, from an unrelated directory, on the bundled model."""

import os
import subprocess
import sys

import openai

from tests.server_thread import free_port, wait_ready


def test_help_explains_the_options():
    out = subprocess.run([sys.executable, "-m", "server", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--model", "--port", "--max-num-seqs", "--max-model-len", "bundled model"):
        assert option in out


def test_bad_option_value_is_refused_with_the_value_quoted():
    r = subprocess.run([sys.executable, "-m", "server", "serve", "--max-num-seqs", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "max_num_seqs" in r.stderr and "0" in r.stderr


def test_serve_bundled_model_from_any_directory(tmp_path, bundled_model_dir):
    port = free_port()
    turnout = os.path.join(os.path.dirname(sys.executable), "turnout")  # the installed console script
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([turnout, "serve", "--port", str(port)], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc, log_path=tmp_path / "server.log")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["turnout-tiny"]
        out = client.chat.completions.create(model="turnout-tiny", max_tokens=8,
                                             messages=[{"role": "user", "content": "What is a tuple?"}])
        assert out.choices[0].message.content
    finally:
        proc.terminate()
        proc.wait(timeout=30)
