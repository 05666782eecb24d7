"""The pure parts of bench/prefix_affinity.py: its workload, and the peak concurrency it reads from logs."""

from __future__ import annotations

import json

from bench.prefix_affinity import most_in_flight, served, workload


def test_the_workload_is_every_prefix_with_every_suffix_in_one_seeded_order():
    items = workload(prefixes=4, suffixes=3, prefix_chars=200, seed=1)
    assert sorted((p, s) for p, s, _ in items) == [(p, s) for p in range(4) for s in range(3)]
    assert items == workload(4, 3, 200, seed=1) and items != workload(4, 3, 200, seed=2)
    by_prefix = {}
    for p, _, prompt in items:
        by_prefix.setdefault(p, set()).add(prompt[:200])
    assert all(len(heads) == 1 for heads in by_prefix.values())  # one document per prefix...
    assert len({heads.pop() for heads in by_prefix.values()}) == 4  # ...and distinct documents


def test_the_peak_in_flight_is_read_from_start_and_end_times(tmp_path):
    def line(rid, end, latency):
        return {"ts": f"2025-01-01T00:00:{end:06.3f}Z", "request_id": rid, "latency_s": latency}

    lines = [line("pa-1", 10.0, 5.0), line("pa-2", 12.0, 4.0), line("pa-3", 13.0, 1.0), line("pa-4", 20.0, 7.0)]
    assert most_in_flight(lines) == 2  # 1 and 2 overlap; 3 starts as 2 ends, 4 as 3 ends
    log = tmp_path / "replica.log"
    log.write_text("\n".join([json.dumps(x) for x in lines] + ["not json", json.dumps(line("lo-1", 1.0, 0.5))]))
    assert [x["request_id"] for x in served(log, "pa")] == ["pa-1", "pa-2", "pa-3", "pa-4"]
