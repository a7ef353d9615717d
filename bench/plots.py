"""PNG plots of the results (matplotlib, Agg backend). Each returns the file name it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import Row


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(rows: list[Row], bench: str, title: str, out: Path, name: str, log_scale: bool = False) -> str | None:
    mine = [r for r in rows if r.bench == bench and r.stats]
    if not mine:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(mine) + 1.5))
    labels = [r.what for r in mine]
    med = [r.stats["median"] for r in mine]
    lo = [r.stats["median"] - r.stats["min"] for r in mine]
    hi = [r.stats["max"] - r.stats["median"] for r in mine]
    ax.barh(labels, med, xerr=[lo, hi], color="#4C72B0", capsize=3)
    ax.invert_yaxis()
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(f"{mine[0].unit} (median, min-max)")
    ax.set_title(title)
    for y, v in enumerate(med):
        ax.text(v, y, f" {v:.3g}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _grid(shared: dict[str, Any], out: Path) -> str | None:
    g = shared.get("grid")
    if not g or not g.get("sizes"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = sorted(int(n) for n in g["sizes"])
    for key, label in (("peer", "GridSearchCV(n_jobs=-1)"), ("mlopsctl", "mlopsctl grid-search"),
                       ("spark", "mlopsctl grid-search --spark")):
        xs, ys = [], []
        for n in sizes:
            runs = g["sizes"][str(n)].get(key) or []
            if runs:
                walls = sorted(r["wall"] for r in runs)
                xs.append(n)
                ys.append(walls[len(walls) // 2])
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("rows (make_friedman1)")
    ax.set_ylabel("wall s (median)")
    ax.set_title("Grid search, 12 points x 3 folds")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "grid_search.png", dpi=110)
    plt.close(fig)
    return "grid_search.png"


def _scaleout(shared: dict[str, Any], out: Path) -> str | None:
    s = shared.get("scaleout")
    if not s:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys = [], []
    for k in (1, 2):
        walls = sorted(s["walls"].get(k) or s["walls"].get(str(k)) or [])
        if walls:
            xs.append(k)
            ys.append(walls[len(walls) // 2])
    if not xs:
        plt.close(fig)
        return None
    ax.bar([str(x) for x in xs], ys, color="#55A868", label="measured")
    F, W = s.get("fixed_s"), s.get("work_s")
    if F is not None and W and W > 0:
        ideal = [F + W / k for k in (1, 2, 4, 8, 16)]
        ax.plot(["1", "2", "4", "8", "16"], ideal, "k--", marker=".", label="T(n) = F + W/n")
    ax.set_xlabel("one-core workers")
    ax.set_ylabel("grid wall s (median)")
    ax.set_title(f"Spark standalone scale-out, {s['rows']:,} rows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scaleout.png", dpi=110)
    plt.close(fig)
    return "scaleout.png"


def make_plots(rows: list[Row], shared: dict[str, Any], out: Path) -> list[str]:
    made = [
        _bars(rows, "startup", "CLI start-up", out, "startup.png", log_scale=True),
        _bars([r for r in rows if r.unit == "s"], "stack", "Local stack start to healthy", out, "stack.png"),
        _bars([r for r in rows if r.key != "orchestration.overhead"], "orchestration",
              "build_model: trigger to exit", out, "orchestration.png"),
        _grid(shared, out),
        _scaleout(shared, out),
    ]
    return [m for m in made if m]
