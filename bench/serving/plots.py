"""PNG plots of a sweep (one line per server when comparing):

  latency_cdf.png   the distribution (CDF) of TTFT, TPOT, ITL and end-to-end latency, one line per level
  throughput.png    output tokens/s and requests/s against concurrency or request rate
  ttft.png          TTFT p50 and p99 (and TPOT p50 and p99) against concurrency or rate
  goodput.png       goodput (requests/s meeting every SLO) and the share of requests that met them; only
                    with --goodput

Levels sit evenly along the x axis, labelled with their values (1, 8, 32, 64 or rates, `inf` included)."""

from __future__ import annotations

from pathlib import Path

from bench.serving.metrics import latency_values, percentile_key

LATENCY_TITLES = {"ttft": "time to first token", "tpot": "time per output token", "itl": "inter-token latency",
                  "e2el": "end-to-end latency"}
LINE_STYLES = ("-", "--", ":", "-.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _levels(series: dict[str, list]) -> list[str]:
    seen: list[str] = []
    for runs in series.values():
        for run in runs:
            if run.shape.label not in seen:
                seen.append(run.shape.label)
    return seen


def _x_label(series: dict[str, list]) -> str:
    closed = {run.shape.closed for runs in series.values() for run in runs}
    if closed == {True}:
        return "concurrency (requests in flight)"
    if closed == {False}:
        return "request rate (requests/s)"
    return "load level"


def _tick_text(label: str) -> str:
    return label.removeprefix("c").removeprefix("rate").removeprefix("-")


def latency_cdfs(series: dict[str, list], path: Path) -> Path:
    plt = _pyplot()
    levels = _levels(series)
    colors = plt.get_cmap("viridis")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, name in zip(axes.flat, LATENCY_TITLES, strict=True):
        for style, (server, runs) in zip(LINE_STYLES * 4, series.items(), strict=False):
            for run in runs:
                values = sorted(v * 1000 for v in latency_values(run.run.results)[name])
                if not values:
                    continue
                share = [(i + 1) / len(values) for i in range(len(values))]
                color = colors(levels.index(run.shape.label) / max(1, len(levels) - 1))
                label = run.shape.label if len(series) == 1 else f"{server} {run.shape.label}"
                ax.step(values, share, where="post", linestyle=style, color=color, label=label)
        ax.set_title(LATENCY_TITLES[name])
        ax.set_xlabel("ms")
        ax.set_ylabel("share of requests" if name != "itl" else "share of token gaps")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not measured (unstreamed)", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("latency distributions")
    return _save(fig, path)


def _against_load(series: dict[str, list], panels: list[tuple[str, list[tuple[str, str]]]], title: str,
                  path: Path) -> Path:
    """`panels`: (y label, [(metric key or a function of the metrics, line name)])."""
    plt = _pyplot()
    levels = _levels(series)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (y_label, lines) in zip(axes[0], panels, strict=True):
        for style, (server, runs) in zip(LINE_STYLES * 4, series.items(), strict=False):
            for key, line_name in lines:
                points = [(levels.index(r.shape.label), key(r.metrics) if callable(key) else r.metrics.get(key))
                          for r in runs]
                points = [(x, y) for x, y in points if y is not None]
                if not points:
                    continue
                name = line_name if len(series) == 1 else f"{server} {line_name}".strip()
                ax.plot(*zip(*points, strict=True), marker="o", linestyle=style, label=name)
        ax.set_xticks(range(len(levels)), [_tick_text(level) for level in levels])
        ax.set_xlabel(_x_label(series))
        ax.set_ylabel(y_label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def throughput(series: dict[str, list], path: Path) -> Path:
    return _against_load(series, [("output tokens/s", [("output_throughput", "")]),
                                  ("requests/s", [("request_throughput", "")])], "throughput", path)


def ttft(series: dict[str, list], path: Path, percentiles: list[float]) -> Path:
    tail = percentile_key(max(percentiles))
    return _against_load(series, [("TTFT ms", [("median_ttft_ms", "p50"), (f"{tail}_ttft_ms", tail)]),
                                  ("TPOT ms", [("median_tpot_ms", "p50"), (f"{tail}_tpot_ms", tail)])],
                         "time to first token and time per output token", path)


def _good_share(metrics: dict) -> float | None:
    sent = metrics["completed"] + metrics["failed"]
    return (metrics["good_requests"] or 0) / sent if sent else None


def goodput(series: dict[str, list], path: Path, slos_ms: dict[str, float]) -> Path:
    slos = ", ".join(f"{name} <= {limit:g} ms" for name, limit in slos_ms.items())
    return _against_load(series, [("good requests/s", [("request_goodput", "")]),
                                  ("share of requests meeting the SLOs", [(_good_share, "")])],
                         f"goodput ({slos})", path)


def write_all(series: dict[str, list], directory: Path, percentiles: list[float],
              slos_ms: dict[str, float]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = [latency_cdfs(series, directory / "latency_cdf.png"),
               throughput(series, directory / "throughput.png"),
               ttft(series, directory / "ttft.png", percentiles)]
    if slos_ms:
        written.append(goodput(series, directory / "goodput.png", slos_ms))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
