"""Pareto fronts of a sweep and their plot (pareto.svg: matplotlib, no date, fixed hash salt: byte-identical).

A row is on the energy front when no other row of the same model has at most its
energy per inference and better accuracy (or, without data, lower latency), one of the
two strictly; the same for area. Each model has its own fronts (a point of one model is
no alternative to another model's). Only rows with status ok take part.
"""

from __future__ import annotations

import io


def _quality(row: dict, with_data: bool) -> float | None:
    """Larger is better: accuracy (or -rel_error without labels), or -latency without data."""
    if with_data:
        if row.get("accuracy") is not None:
            return row["accuracy"]
        return -row["rel_error"] if row.get("rel_error") is not None else None
    return -row["latency_ns"] if row.get("latency_ns") is not None else None


def front(rows: list[dict], cost: str, with_data: bool) -> list[bool]:
    pts = [(r.get(cost), _quality(r, with_data)) if r["status"] == "ok" else (None, None) for r in rows]
    out = []
    for c, q in pts:
        if c is None or q is None:
            out.append(False)
            continue
        out.append(not any(c2 is not None and q2 is not None and c2 <= c and q2 >= q and (c2 < c or q2 > q)
                           for c2, q2 in pts))
    return out


def mark(rows: list[dict], with_data: bool) -> None:
    """Set each row's pareto_energy and pareto_area: on its model's fronts (None for rows that did not run)."""
    models: dict[str, list[dict]] = {}
    for row in rows:
        models.setdefault(row.get("model"), []).append(row)
    for column, cost in (("pareto_energy", "energy_pj"), ("pareto_area", "area_mm2")):
        for group in models.values():
            for row, on in zip(group, front(group, cost, with_data)):
                row[column] = on if row["status"] == "ok" else None


FRONT_COLOURS = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")   # Okabe-Ito, colour-blind safe


def _panel(ax, rows: list[dict], cost: str, xlabel: str, ylabel: str, flag: str, with_data: bool,
           keys: list[str]) -> None:
    pts = [(r[cost], _quality(r, with_data), bool(r.get(flag)), r) for r in rows
           if r["status"] == "ok" and r.get(cost) and _quality(r, with_data) is not None]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.spines[["top", "right"]].set_visible(False)
    if not pts:
        ax.text(0.5, 0.5, "no rows to plot", ha="center", va="center", transform=ax.transAxes)
        return
    sign = 1.0 if ylabel == "accuracy" else -1.0        # rel. error and latency: lower is better, shown as is
    off = [(c, q * sign) for c, q, f, _r in pts if not f]
    if off:
        ax.scatter([c for c, _ in off], [q for _, q in off], s=14, color="#999999", label="other rows")
    models = list(dict.fromkeys(r.get("model") for *_x, r in pts))
    for i, model in enumerate(models):     # each model's own front
        on = sorted(((c, q * sign, r) for c, q, f, r in pts if f and r.get("model") == model), key=lambda t: t[:2])
        ax.plot([c for c, _, _ in on], [q for _, q, _ in on], "-o", color=FRONT_COLOURS[i % len(FRONT_COLOURS)],
                markersize=5, label="Pareto front" + (f": {model}" if len(models) > 1 else ""))
        for c, q, r in on:
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={r[k]}" for k in keys)
            if label:
                ax.annotate(label, (c, q), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if max(p[0] for p in pts) > 10 * min(p[0] for p in pts):
        ax.set_xscale("log")
    ax.legend(fontsize=8, frameon=False)


def svg(rows: list[dict], with_data: bool, title: str, keys: list[str] = ()) -> str:
    """Energy and area against accuracy (or rel. error; without data, latency), the fronts in orange."""
    import matplotlib
    from matplotlib.figure import Figure
    ylabel = "accuracy" if with_data and any(r.get("accuracy") is not None for r in rows) else (
        "relative error" if with_data else "latency (ns)")
    fig = Figure(figsize=(10.0, 4.0), dpi=72)
    left, right = fig.subplots(1, 2)
    _panel(left, rows, "energy_pj", "energy per inference (pJ)", ylabel, "pareto_energy", with_data, list(keys))
    _panel(right, rows, "area_mm2", "area (mm²)", ylabel, "pareto_area", with_data, list(keys))
    fig.suptitle(title)
    with matplotlib.rc_context({"svg.hashsalt": "acompile-pareto", "svg.fonttype": "none",
                                "font.family": "sans-serif", "font.size": 10}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    return buf.getvalue()
