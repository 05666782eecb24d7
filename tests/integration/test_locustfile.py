"""The ops teams' locustfile, run by a stock `locust` against the bundled model, as CI runs it: 20 users for
20 seconds, every request kind, and not one failure."""

import csv
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = ("completions stream", "chat stream", "completions whole", "chat whole")


def test_locust_headless_run_has_requests_of_every_kind_and_no_failure(server, tmp_path):
    prefix = tmp_path / "ops"
    finished = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--host", server.url,
         "--headless", "-u", "20", "-r", "10", "-t", "20s", "--stop-timeout", "30", "--csv", str(prefix)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    said = finished.stdout
    assert finished.returncode == 0, said[-3000:]
    # The last table locust prints is the final one (headless runs also print it as they go).
    printed = {(kind, name): (int(count), int(failed)) for kind, name, count, failed in
               re.findall(r"^(\w+)\s+((?:completions|chat) (?:stream|whole))\s+(\d+)\s+(\d+)\(", said, re.M)}
    for row in ROWS:
        count, failed = printed[("POST", row)]
        assert count > 0 and failed == 0, (row, said[-3000:])
    requests, failures = re.findall(r"^\s+Aggregated\s+(\d+)\s+(\d+)\(", said, re.M)[-1]
    assert int(requests) == sum(printed[("POST", row)][0] for row in ROWS), "metric rows stay out of it"
    assert int(failures) == 0
    # The custom metrics are rows of locust's --csv output, next to the request rows.
    rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(open(f"{prefix}_stats.csv"))}
    for name in ("completions stream", "chat stream"):
        assert float(rows[("TTFT", name)]["Median Response Time"]) > 0
        assert int(rows[("ITL", name)]["Request Count"]) > int(rows[("TTFT", name)]["Request Count"])
        assert float(rows[("TOKENS", name)]["Median Response Time"]) == 32  # --max-tokens' default, EOS ignored
    assert ("TOKENS", "chat whole") in rows and ("TTFT", "chat whole") not in rows
    assert list(csv.DictReader(open(f"{prefix}_failures.csv"))) == []
