"""The paper's ablation (Table 1): train configurations (a)-(h) at an equal budget and tabulate
SWD per pyramid level (x1e3) and MS-SSIM.

Each row of Table 1 switches one contribution on. :data:`ABLATION_CONFIGS` is the one place
that says what every row means; each row lists *all* of its switches (no hidden inheritance),
so a row can be read and tested on its own:

=====  ===========================  ==========================================================
row    paper's name                 switches (relative to the row above)
=====  ===========================  ==========================================================
(a)    Gulrajani et al. (2017)      WGAN-GP baseline: no growing, minibatch 64, batch norm in
                                    G, layer norm in D, He init without run-time scaling, no
                                    minibatch stddev, no pixel norm, Adam lr 1e-4 beta2 0.9,
                                    5 D steps per G step, no drift term, latent 1/4 of the
                                    full size (paper: 128)
(b)    + Progressive growing        growing on
(c)    + Small minibatch            minibatch 16
(d)    + Revised training params    lr 1e-3, beta2 0.99, 1 D step per G step, drift 1e-3,
                                    full latent size; batch norm and layer norm removed
(e*)   + Minibatch discrimination   Salimans et al. (2016): 100 kernels x 5 dims in D's head
(e)    Minibatch stddev             instead of (e*): minibatch stddev, group size 4
(f)    + Equalized learning rate    run-time He scaling (Section 4.1)
(g)    + Pixelwise normalization    pixel norm in G, also of the latent input (Section 4.2)
(h)    Converged                    full-width networks, twice the training length
=====  ===========================  ==========================================================

Network width: as in the paper (Appendix A.2), rows (a)-(g) use a lower-capacity network and
(h) the full one. With the feature-map formula ``min(fmap_base / 2**(stage), fmap_max)`` the
paper's reduction (half the maps at 16x16, a quarter from 32x32 on) is exactly
``fmap_base / 4`` with the same ``fmap_max``; the full width is the preset's (or
``--fmap-base``/``--fmap-max``). Latent: (a)-(c) use a quarter of the full latent size
(the paper's 128 against 512).

Budget: every row trains ``kimg`` thousand real images, except (h) which trains ``2 * kimg``
(the paper's (h) is "longer training"; 2x is our choice). The paper (Section 6.1) trains each
row until D has seen 10M real images (``PAPER_KIMG`` = 10,000), with 600k images per
stabilization and per fade-in phase up to 128x128 (11 phases = 6,600 kimg), then stable at
128x128 until 10,000 kimg. With growing, every phase is ``phase_kimg``, by default the paper's
share of the budget, ``kimg * 600 / 10,000`` (600 at the paper's budget), but at most
``kimg / (2L - 1)`` for L resolutions from 4x4 to the target, so the target is always reached
and stabilized for at least one phase.

Known deviations from the paper's baseline (the training loop is shared by all rows): leaky
ReLU and a linear output in G (the paper's (a)-(c) used ReLU and tanh); the EMA generator is
evaluated in every row.

Outputs in ``outdir``: ``<row>/`` (run folders), ``<row>-samples.png``, ``<row>/metrics.json``,
``ablation.csv`` and ``ablation.md`` (rewritten after every row, so partial results survive).
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from progan.config import TrainConfig, load_config, to_dict
from progan.errors import ConfigError
from progan.fileio import atomic_write_bytes, atomic_write_json

__all__ = [
    "ABLATION_CONFIGS",
    "PAPER_KIMG",
    "PAPER_PHASE_KIMG",
    "AblationConfig",
    "AblationRow",
    "build_config",
    "default_phase_kimg",
    "parse_config_keys",
    "run_ablation",
    "table_columns",
    "write_tables",
]


@dataclass(frozen=True)
class AblationConfig:
    """One row of Table 1: its key, the paper's name, and all of its switches.

    Switches: ``d_steps`` (D steps per G step, n_critic), ``growing`` (progressive growing),
    ``minibatch`` (images per step at every resolution), ``batchnorm_g``, ``layernorm_d``,
    ``pixelnorm``, ``normalize_latents``, ``equalized_lr``, ``mbstd_group_size`` (0 = off),
    ``mbdisc_kernels``/``mbdisc_dims`` (minibatch discrimination, 0 kernels = off),
    ``learning_rate``, ``adam_beta2``, ``drift`` (epsilon_drift), ``latent_fraction`` (of the
    full latent size), ``full_width`` (False: the paper's lower-capacity network,
    ``fmap_base / 4``), ``kimg_factor`` (x the budget).
    """

    key: str
    name: str
    description: str
    switches: MappingProxyType = field(repr=False)

    @property
    def slug(self) -> str:
        """File-system name of the row: ``a`` ... ``h``, ``e-star`` for (e*)."""
        return self.key.replace("*", "-star")

    @property
    def label(self) -> str:
        return f"({self.key}) {self.name}"


def _derive(parent: dict[str, Any], **changes: Any) -> dict[str, Any]:
    unknown = set(changes) - set(parent)
    if unknown:
        raise KeyError(f"unknown ablation switch(es): {sorted(unknown)}")
    return {**parent, **changes}


_A = dict(
    d_steps=5,
    growing=False,
    minibatch=64,
    batchnorm_g=True,
    layernorm_d=True,
    pixelnorm=False,
    normalize_latents=False,
    equalized_lr=False,
    mbstd_group_size=0,
    mbdisc_kernels=0,
    mbdisc_dims=5,
    learning_rate=1e-4,
    adam_beta2=0.9,
    drift=0.0,
    latent_fraction=0.25,
    full_width=False,
    kimg_factor=1.0,
)
_B = _derive(_A, growing=True)
_C = _derive(_B, minibatch=16)
_D = _derive(
    _C,
    d_steps=1,
    learning_rate=1e-3,
    adam_beta2=0.99,
    drift=1e-3,
    latent_fraction=1.0,
    batchnorm_g=False,
    layernorm_d=False,
)
_E_STAR = _derive(_D, mbdisc_kernels=100)
_E = _derive(_D, mbstd_group_size=4)
_F = _derive(_E, equalized_lr=True)
_G = _derive(_F, pixelnorm=True, normalize_latents=True)
_H = _derive(_G, full_width=True, kimg_factor=2.0)

#: Rows of Table 1 in the paper's order, by key: "a", "b", "c", "d", "e*", "e", "f", "g", "h".
ABLATION_CONFIGS: dict[str, AblationConfig] = {
    c.key: c
    for c in (
        AblationConfig(
            "a",
            "Gulrajani et al. (2017)",
            "WGAN-GP baseline: minibatch 64, batch norm in G, layer norm in D, He init, "
            "lr 1e-4, beta2 0.9, 5 D steps per G step, no growing",
            MappingProxyType(_A),
        ),
        AblationConfig("b", "+ Progressive growing", "grow from 4x4", MappingProxyType(_B)),
        AblationConfig("c", "+ Small minibatch", "minibatch 64 -> 16", MappingProxyType(_C)),
        AblationConfig(
            "d",
            "+ Revised training parameters",
            "lr 1e-3, beta2 0.99, 1 D step per G step, drift 1e-3, full latent; "
            "no batch/layer norm",
            MappingProxyType(_D),
        ),
        AblationConfig(
            "e*",
            "+ Minibatch discrimination",
            "Salimans et al. (2016): 100 kernels x 5 dims in D",
            MappingProxyType(_E_STAR),
        ),
        AblationConfig(
            "e",
            "Minibatch stddev",
            "instead of (e*): minibatch stddev, group size 4",
            MappingProxyType(_E),
        ),
        AblationConfig(
            "f", "+ Equalized learning rate", "run-time He scaling", MappingProxyType(_F)
        ),
        AblationConfig(
            "g",
            "+ Pixelwise normalization",
            "pixel norm in G, also of the latent",
            MappingProxyType(_G),
        ),
        AblationConfig(
            "h", "Converged", "full-width networks, 2x training length", MappingProxyType(_H)
        ),
    )
}


def parse_config_keys(text: str | Sequence[str] | None) -> list[AblationConfig]:
    """``"a,b,e*"`` (or ``e-star``/``estar`` for e*; ``all`` or None for every row) -> rows
    in the paper's order."""
    if text is None:
        return list(ABLATION_CONFIGS.values())
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted: set[str] = set()
    for item in (i.strip().lower().strip("()") for i in items):
        if not item:
            continue
        if item == "all":
            return list(ABLATION_CONFIGS.values())
        key = {"e-star": "e*", "estar": "e*"}.get(item, item)
        if key not in ABLATION_CONFIGS:
            raise ConfigError(
                f"unknown ablation configuration {item!r}; choose from "
                f"{', '.join(ABLATION_CONFIGS)}"
            )
        wanted.add(key)
    if not wanted:
        raise ConfigError("no ablation configuration given")
    return [row for key, row in ABLATION_CONFIGS.items() if key in wanted]


PAPER_KIMG = 10_000.0  # Section 6.1: D sees 10M real images per row
PAPER_PHASE_KIMG = 600.0  # Appendix A.2: 600k images per stabilization and per fade-in


def default_phase_kimg(kimg: float, resolution: int, start_resolution: int = 4) -> float:
    """Length of each growing phase: the paper's ``kimg * 600 / 10,000`` (600 kimg phases in
    a 10,000 kimg budget), capped at ``kimg / (2L - 1)`` for L resolutions so that the budget
    always covers the stabilization at ``start_resolution`` and a fade-in and a stabilization
    for every later resolution."""
    levels = int(math.log2(resolution)) - int(math.log2(start_resolution)) + 1
    return min(kimg * PAPER_PHASE_KIMG / PAPER_KIMG, kimg / (2 * levels - 1))


def build_config(
    base: TrainConfig,
    row: AblationConfig,
    kimg: float,
    phase_kimg: float | None = None,
) -> TrainConfig:
    """``base`` (its network at *full* width and latent size) with ``row``'s switches applied,
    trained for ``kimg * kimg_factor`` kimg into ``base.outdir/<row slug>``."""
    s = row.switches
    cfg = copy.deepcopy(base)
    net = cfg.network
    if not s["full_width"]:
        net.fmap_base = max(1, base.network.fmap_base // 4)
    net.latent_size = max(1, round(base.network.latent_size * s["latent_fraction"]))
    for name in (
        "batchnorm_g",
        "layernorm_d",
        "pixelnorm",
        "normalize_latents",
        "equalized_lr",
        "mbstd_group_size",
        "mbdisc_kernels",
        "mbdisc_dims",
    ):
        setattr(net, name, s[name])
    sched = cfg.schedule
    sched.growing = bool(s["growing"])
    sched.minibatch, sched.minibatch_default = {}, int(s["minibatch"])
    sched.learning_rate, sched.learning_rate_default = {}, float(s["learning_rate"])
    phase = phase_kimg or default_phase_kimg(kimg, net.resolution, sched.start_resolution)
    sched.stabilize_kimg = sched.fade_kimg = float(phase)
    sched.total_kimg = float(kimg) * float(s["kimg_factor"])
    cfg.adam_betas = (cfg.adam_betas[0], float(s["adam_beta2"]))
    cfg.d_steps = int(s["d_steps"])
    cfg.loss.name = "wgan-gp"
    cfg.loss.drift = float(s["drift"])
    cfg.outdir = str(Path(base.outdir) / row.slug)
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------------------------
# results table


@dataclass
class AblationRow:
    """The measured result of one row."""

    config: AblationConfig
    swd: dict[str, float]  # level resolution ("32", "16", ...) and "avg" -> SWD x1e3
    ms_ssim: float
    kimg: float
    train_minutes: float
    run_dir: str

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.key,
            "name": self.config.name,
            "description": self.config.description,
            "swd": self.swd,
            "ms-ssim": self.ms_ssim,
            "kimg": self.kimg,
            "train_minutes": self.train_minutes,
            "run_dir": self.run_dir,
        }


def _levels(rows: Sequence[AblationRow]) -> list[str]:
    levels = {k for r in rows for k in r.swd if k != "avg"}
    return sorted(levels, key=lambda k: -int(k))


def table_columns(rows: Sequence[AblationRow]) -> list[str]:
    """CSV columns: config, description, ``swd_<res>`` highest resolution first, swd_avg,
    ms_ssim, then kimg and train_minutes."""
    return [
        "config",
        "description",
        *[f"swd_{lv}" for lv in _levels(rows)],
        "swd_avg",
        "ms_ssim",
        "kimg",
        "train_minutes",
    ]


def write_tables(
    rows: Sequence[AblationRow], outdir: str | Path, notes: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Write ``ablation.csv`` and ``ablation.md`` (the paper's layout: SWD x1e3 per level,
    highest resolution first, their average, MS-SSIM); returns their paths."""
    outdir = Path(outdir)
    levels = _levels(rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table_columns(rows))
    for r in rows:
        writer.writerow(
            [r.config.key, r.config.label]
            + [f"{r.swd[lv]:.3f}" if lv in r.swd else "" for lv in levels]
            + [f"{r.swd['avg']:.3f}", f"{r.ms_ssim:.4f}", f"{r.kimg:g}", f"{r.train_minutes:.2f}"]
        )
    csv_path = atomic_write_bytes(outdir / "ablation.csv", buf.getvalue().encode())

    head = ["Training configuration", *[f"SWD {lv}" for lv in levels], "SWD avg", "MS-SSIM"]
    head += ["kimg", "minutes"]
    lines = [
        "# Ablation (paper Table 1)",
        "",
        "Sliced Wasserstein distance x1e3 per Laplacian pyramid level (named by resolution; "
        "lower is better) and MS-SSIM among generated images.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join([":--"] + ["--:"] * (len(head) - 1)) + "|",
    ]
    for r in rows:
        cells = [r.config.label]
        cells += [f"{r.swd[lv]:.2f}" if lv in r.swd else "" for lv in levels]
        cells += [
            f"{r.swd['avg']:.2f}",
            f"{r.ms_ssim:.4f}",
            f"{r.kimg:g}",
            f"{r.train_minutes:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    md_path = atomic_write_bytes(outdir / "ablation.md", ("\n".join(lines) + "\n").encode())
    return csv_path, md_path


# --------------------------------------------------------------------------------------------
# running


def _existing_run(cfg: TrainConfig) -> Path | None:
    """The newest run folder under ``cfg.outdir`` trained with exactly ``cfg`` that has a
    checkpoint to continue from, or None."""
    folder = Path(cfg.outdir)
    if not folder.is_dir():
        return None
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and p.name[:5].isdigit())
    for run in reversed(runs):
        try:
            same = to_dict(load_config(run / "config.json")) == to_dict(cfg)
        except ConfigError:
            continue
        if same and (run / "checkpoints.json").is_file():
            return run
    return None


def train_row(cfg: TrainConfig, progress: bool = False) -> Path:
    """Train ``cfg`` to its end; a finished or interrupted run with the same configuration in
    ``cfg.outdir`` is continued (or left as it is) instead of starting over."""
    from progan.train.api import train

    run = _existing_run(cfg)
    if run is not None:
        return train(resume=run, progress=progress)
    return train(cfg, progress=progress)


def evaluate_generator(
    G: Any,
    data: str | Path,
    num: int | None,
    device: Any,
    seed: int,
    metrics: Sequence[str] = ("swd", "ms-ssim"),
) -> dict[str, Any]:
    """SWD (x1e3 per level) and MS-SSIM of a loaded generator against ``data``."""
    from progan.metrics.api import evaluate
    from progan.metrics.sources import GeneratorSource

    source = GeneratorSource(G, device=device)
    return evaluate(list(metrics), source, str(data), num=num, device=device, seed=seed)


def run_ablation(
    base: TrainConfig,
    configs: Sequence[AblationConfig],
    kimg: float,
    phase_kimg: float | None = None,
    num: int | None = None,
    grid_size: int = 64,
    progress: bool = False,
    reference: bool = True,
    log: Callable[[str], None] = print,
) -> list[AblationRow]:
    """Train and evaluate every row of ``configs`` in turn (into ``base.outdir``).

    Args:
        base: the configuration at full width (data, preset, seed, device, ...): e.g. from
            :func:`progan.train.api.configure`.
        configs: rows of :data:`ABLATION_CONFIGS`.
        kimg: the budget of each row (x ``kimg_factor``, 2 for (h)).
        phase_kimg: growing phase length (default :func:`default_phase_kimg`).
        num: images per metric (None: SWD 16384 capped by the dataset, MS-SSIM 20000).
        grid_size: samples in each ``<row>-samples.png``.
        reference: add the MS-SSIM of the real images to the table's notes.

    Returns the measured rows; ``ablation.csv``/``ablation.md`` are written after each row.
    """
    from progan.generate import generate_images, load_generator
    from progan.tools.grid import save_image_grid
    from progan.tools.plot import read_log
    from progan.train.trainer import resolve_device

    outdir = Path(base.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(base.device)
    results: list[AblationRow] = []
    notes = [
        f"Data: {base.data} at {base.network.resolution}x{base.network.resolution}; "
        f"budget {kimg:g} kimg per row ((h): x2); preset {base.preset}, full width "
        f"fmap_base={base.network.fmap_base}, fmap_max={base.network.fmap_max}, "
        f"latent={base.network.latent_size}; seed {base.seed}.",
    ]
    if reference:
        from progan.metrics.api import evaluate

        real = evaluate(["ms-ssim"], str(base.data), num=num, device=device, seed=base.seed)
        notes.append(
            f"MS-SSIM of the training images themselves: {real['ms-ssim']:.4f} "
            f"({real['num_images']['ms-ssim']} images)."
        )
    for row in configs:
        cfg = build_config(base, row, kimg, phase_kimg)
        log(
            f"[ablation] {row.label}: {cfg.schedule.total_kimg:g} kimg, "
            f"fmap_base {cfg.network.fmap_base}, latent {cfg.network.latent_size}"
        )
        t0 = time.time()
        run = train_row(cfg, progress=progress)
        records = read_log(run)
        minutes = (records[-1]["seconds"] / 60.0) if records else (time.time() - t0) / 60.0
        G = load_generator(run, device)
        result = evaluate_generator(G, base.data, num, device, base.seed)
        images = generate_images(G, list(range(grid_size)), device=device)
        save_image_grid(images, outdir / f"{row.slug}-samples.png")
        measured = AblationRow(
            config=row,
            swd={k: float(v) for k, v in result["swd"].items()},
            ms_ssim=float(result["ms-ssim"]),
            kimg=cfg.schedule.total_kimg,
            train_minutes=minutes,
            run_dir=str(run),
        )
        atomic_write_json(
            Path(cfg.outdir) / "metrics.json",
            {**measured.to_json(), "num_images": result["num_images"]},
        )
        results.append(measured)
        write_tables(results, outdir, notes)
        log(
            f"[ablation] {row.label}: SWD avg {measured.swd['avg']:.2f}, "
            f"MS-SSIM {measured.ms_ssim:.4f}, {minutes:.1f} min"
        )
    atomic_write_json(outdir / "ablation.json", [r.to_json() for r in results])
    return results
