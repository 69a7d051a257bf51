"""WER against whole-model size for every model adapted in a profile (matplotlib, PNG).

Points come from the `report.json` of each model in `<profile>/models/` (its compressed WER
and whole-model parameters) and from their original models (tiny.en, base, ... whatever
bases were adapted: their WER on the same sets, their full size). One panel per evaluation
set (held-out takes, `--speaker-set`, `--general-set`); a set is keyed by its label, so runs
measured on other slices of a dataset are not mixed.
"""

from __future__ import annotations

import json
from pathlib import Path

PICTURE = "wer_vs_size.png"
SET_TITLES = {"heldout": "held-out takes", "speaker": "speaker's other recordings", "general": "other voices"}


def measured_points(reports: list[dict]) -> dict[tuple[str, str], list[tuple[str, float, float, bool]]]:
    """(set name, set label) -> [(model name, whole-model parameters in millions, WER %,
    whether it is an original model)].

    Args:
        reports: `AdaptReport.to_dict()`s (report.json), each with "params" and "wer".
    Returns:
        Each report's compressed model once, and each base model once per set (its
        "original" figures), in the order met.
    """
    points: dict[tuple[str, str], list[tuple[str, float, float, bool]]] = {}
    seen: set = set()
    for r in reports:
        params = r.get("params") or {}
        if "compressed" not in params:
            continue
        base = str(r.get("options", {}).get("base", "original"))
        name = Path(str(r.get("model_dir") or "compressed")).name
        for set_name, row in (r.get("wer") or {}).items():
            key = (set_name, str(row.get("set", "")))
            rows = points.setdefault(key, [])
            if "original" in row and (key, base) not in seen:
                seen.add((key, base))
                rows.append((base, params["original"]["model"] / 1e6, float(row["original"]), True))
            if "compressed" in row:
                rows.append((name, params["compressed"]["model"] / 1e6, float(row["compressed"]), False))
    return points


def plot_wer_against_size(profile_dir: Path, out: Path) -> Path | None:
    """Draw every model of the profile (and their originals) as WER against size.

    Args:
        profile_dir: the profile folder (reads `models/*/report.json`).
        out: the PNG to write.
    Returns:
        `out` (written whole: a temporary file renamed), or None when no report has both
        sizes and WER.
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    reports = []
    for path in sorted((profile_dir / "models").glob("*/report.json")):
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a report being written or damaged: the others still draw
    points = measured_points(reports)
    if not points:
        return None
    fig = Figure(figsize=(5.2 * len(points), 4.2))
    axes = fig.subplots(1, len(points), squeeze=False)
    for ax, ((set_name, label), rows) in zip(axes[0], points.items()):
        for model, size, wer, original in rows:
            ax.scatter(size, wer, marker="*" if original else "o", s=120 if original else 40, zorder=3)
            ax.annotate(model, (size, wer), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"{SET_TITLES.get(set_name, set_name)}\n{label}", fontsize=8)
        ax.set_xlabel("whole model, million parameters")
        ax.set_ylabel("WER %")
        ax.grid(alpha=0.3)
    fig.suptitle(f"profile {profile_dir.name}: WER against size (stars: original models)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, dpi=120, format="png")
    tmp.replace(out)
    return out
