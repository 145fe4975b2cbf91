"""The projection of a whole run from measured rows: the time a full progressive schedule (its
phases, batch sizes and fades) would take at the measured images per second, each phase at
min(step rate, data rate) when the data rates of the training stream are given
(``benchmarks/data_rate.py``'s JSON, :func:`data_rates_from_json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench_device import reference_flops_per_image
from bench_progan import network_config
from progan.presets import preset
from progan.schedule import Schedule


def data_rates_from_json(path: str | Path, prepared: bool = True) -> dict[int, float]:
    """{resolution: img/s} of the stream in a ``data_rate.py`` JSON: the best worker count of
    each resolution, after (``prepared``) or before the dataset's levels were prepared."""
    rates: dict[int, float] = {}
    for row in json.loads(Path(path).read_text())["streams"]:
        if row["prepared"] == prepared:
            res = int(row["resolution"])
            rates[res] = max(rates.get(res, 0.0), float(row["img_per_s"]))
    return rates


def project_run(
    rows: list[dict[str, Any]],
    preset_name: str,
    target: int,
    batch_override: int | None,
    data_rates: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Hours for all phases of ``preset_name``'s schedule up to ``target``, per measured path.

    With ``data_rates`` ({resolution: img/s the training stream delivers}), a phase runs at
    min(step img/s, data img/s) and ``bound_by_resolution`` says which binds ("step" or
    "data"); a resolution without a data rate is taken as step-bound.

    A phase's time is its images / the path's img/s at that resolution (fade phases use the
    fade measurement when there is one, else the stable one). Resolutions not measured are
    extrapolated: above the largest measured one by scaling its img/s with the ratio of FLOPs
    per image (same achieved FLOP/s), below the smallest measured one with its img/s.
    """
    cfg = preset(preset_name, target)
    schedule = Schedule(cfg.schedule, target)
    segments = schedule.segments()
    ok = [r for r in rows if not r.get("error")]
    keys = sorted({(r["path"], r["variant"]) for r in ok}, key=lambda k: (k[0] != "reference", k))
    measured = sorted({r["resolution"] for r in ok})
    needed = sorted({s.resolution for s in segments})
    extrapolated = [r for r in needed if r not in measured]
    notes: list[str] = []
    out: dict[str, Any] = {
        "preset": preset_name,
        "resolution": target,
        "total_kimg": cfg.schedule.total_kimg,
        "phases": [
            {"resolution": s.resolution, "fading": s.fading, "kimg": s.kimg, "batch": s.batch_size}
            for s in segments
        ],
        "measured_resolutions": measured,
        "extrapolated_resolutions": extrapolated,
        "paths": {},
        "notes": notes,
    }
    if not ok:
        notes.append("nothing was measured")
        return out
    if batch_override is not None:
        notes.append(f"measured at --batch {batch_override}, not the schedule's minibatch sizes")
    elif any(
        r["batch"] != schedule.batch_size(r["resolution"]) for r in ok if r["resolution"] >= 8
    ):
        notes.append("some measured batch sizes differ from the projected schedule's")
    flops_cache: dict[int, float] = {}

    def flops_at(res: int) -> float:
        if res not in flops_cache:
            net = network_config(preset_name, res).network
            flops_cache[res] = reference_flops_per_image(net, res, schedule.batch_size(res))
        return flops_cache[res]

    if any(r > max(measured) for r in extrapolated):
        notes.append(
            f"resolutions above {max(measured)} scale its img/s by the ratio of reference FLOPs "
            "per image (counted on the meta device), i.e. assume the same achieved TFLOP/s"
        )
    if any(r < min(measured) for r in extrapolated):
        notes.append(
            f"resolutions below {min(measured)} use its img/s (a conservative upper bound on time)"
        )
    fade_from_stable = False
    for path, variant in keys:
        mine = [r for r in ok if r["path"] == path and r["variant"] == variant]
        stable = {r["resolution"]: r["img_per_s"] for r in mine if r["alpha"] >= 1.0}
        fade = {r["resolution"]: r["img_per_s"] for r in mine if r["alpha"] < 1.0}
        if not stable:
            stable = dict(fade)
        per_res: dict[int, float] = {}
        bound: dict[int, str] = {}
        for seg in segments:
            res = seg.resolution
            if seg.fading and res in fade:
                ips = fade[res]
            elif res in stable:
                ips = stable[res]
                fade_from_stable |= seg.fading
            else:
                below = [m for m in stable if m < res]
                if below:
                    anchor = max(below)
                    ips = stable[anchor] * flops_at(anchor) / flops_at(res)
                else:
                    ips = stable[min(stable)]
                fade_from_stable |= seg.fading
            data_ips = (data_rates or {}).get(res)
            if data_ips is not None and data_ips < ips:
                ips = data_ips
                bound[res] = "data"
            else:
                bound.setdefault(res, "step")
            per_res[res] = per_res.get(res, 0.0) + seg.kimg * 1000 / ips / 3600
        out["paths"][f"{path}:{variant}"] = {
            "hours": round(sum(per_res.values()), 3),
            "hours_by_resolution": {str(k): round(v, 4) for k, v in per_res.items()},
            "bound_by_resolution": {str(k): v for k, v in bound.items()},
        }
    if fade_from_stable:
        notes.append("fade-in phases without a fade measurement use the stable img/s")
    if data_rates:
        out["data_rates"] = {str(k): v for k, v in sorted(data_rates.items())}
        missing = [r for r in needed if r not in data_rates]
        if missing:
            notes.append(f"no data rate at {missing}: taken as step-bound there")
    return out
