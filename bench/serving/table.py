"""What `turnout bench` prints: one row per level, then what went wrong, said plainly."""

from __future__ import annotations

from bench.serving.metrics import percentile_key


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pair(metrics: dict, name: str, tail_key: str) -> str:
    return f"{_ms(metrics[f'median_{name}_ms'])}/{_ms(metrics.get(f'{tail_key}_{name}_ms'))}"


def summary_table(rows: list[tuple[str, dict]], percentiles: list[float]) -> str:
    """`rows`: (level label, metrics). Latencies as median/p<last percentile> in ms."""
    tail = percentile_key(max(percentiles))
    header = (f"{'level':<10}{'ok/sent':>9}{'failed':>7}{'429':>5}{'short':>6}{'req/s':>8}{'out tok/s':>11}"
              f"{'tot tok/s':>11}{'TTFT p50/' + tail:>16}{'TPOT p50/' + tail:>14}{'ITL p50/' + tail:>14}"
              f"{'E2EL p50/' + tail:>18}{'goodput':>9}")
    lines = [header, "-" * len(header)]
    for label, m in rows:
        sent = m["completed"] + m["failed"]
        goodput = "-" if m["request_goodput"] is None else f"{m['request_goodput']:.2f}"
        lines.append(
            f"{label:<10}{m['completed']:>4}/{sent:<4}{m['failed']:>7}{m['failures'].get('rate_limited', 0):>5}"
            f"{m['short_outputs']:>6}{m['request_throughput']:>8.2f}{m['output_throughput']:>11.1f}"
            f"{m['total_token_throughput']:>11.1f}{_pair(m, 'ttft', tail):>16}{_pair(m, 'tpot', tail):>14}"
            f"{_pair(m, 'itl', tail):>14}{_pair(m, 'e2el', tail):>18}{goodput:>9}")
    return "\n".join(lines)


def problems(rows: list[tuple[str, dict]], errors: dict[str, list[str]]) -> list[str]:
    """Sentences about failures and short outputs, per level; empty when there were none."""
    said = []
    for label, m in rows:
        if m["failed"]:
            kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(m["failures"].items()))
            said.append(f"{label}: {m['failed']} of {m['completed'] + m['failed']} requests failed ({kinds})")
            said.extend(f"    e.g. {e}" for e in errors.get(label, [])[:3])
        if m["short_outputs"]:
            said.append(f"{label}: {m['short_outputs']} completed requests returned fewer tokens than asked "
                        "(the server stopped early: does it honour ignore_eos?); throughput counts the tokens "
                        "actually returned")
    return said
