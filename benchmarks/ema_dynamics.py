"""How the generator EMA follows the raw generator during a run (issue 24's diagnostic).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/ema_dynamics.py --data celeba32.zip \\
        --preset cpu --mirror --resolution 16 --phase-kimg 2 --kimg 9 --seed 0 --out DIR

Trains one run exactly as ``progan train`` does (the Trainer's own step), and beside the
trainer's EMA keeps several EMA copies of the same G with other half-lives (``--variants``):
``rDIGITS`` = ramp-up 0.DIGITS x images shown (``r05`` = 0.05, ``r005`` = 0.005; capped at
``ema_beta``'s half-life, as ``Trainer.ema_beta``), ``hlN`` = a fixed half-life of N G
steps. Since the EMA never feeds back into training, one run compares them all on the same G
trajectory. Every ``--every`` steps it writes one JSON line to ``DIR/ema_dynamics.jsonl``:

* per-image pixel std and mean colour (uint8 units, R/G/B) of 200 fixed latents' images from
  the raw G and from each EMA (``raw``, ``r05``, ...: ``[[mean R, G, B], [std R, G, B]]``);
* ``out_ema``: the same for an EMA of the raw G's *outputs* (32 latents, the r05 decay),
  beside ``raw32`` and ``r05_32`` of the same latents: an average of outputs loses what an
  average of weights loses when the loss comes from the images changing, not from the
  weights being averaged (reset at each phase change);
* ``corr``: correlation of each of those 32 images with the same latent's image 1, 4, 16 and
  64 G steps earlier (mean over the latents; per image, centred), and ``colour_swing``: the std
  over the last 64 steps of the batch-mean colour (uint8 units).

At the end every generator is saved as ``DIR/<name>.safetensors`` (``raw``, ``ema`` = the
trainer's own EMA, ``r05``, ...; ``progan metrics``/``generate`` read them) and
``DIR/final.json`` holds the statistics of 1,000 latents' images of each, plus the data's.
``--save-at 44,46,48`` also saves every generator when the run passes each of those kimg, as
``DIR/at-KKK.K/<name>.safetensors`` (``benchmarks/ema_fid.py`` measures them: a raw G's FID at
one instant is one draw from a trajectory that hops, so compare over several instants).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch

from progan.generate import to_uint8
from progan.train import checkpoint as ckpt
from progan.train.api import configure
from progan.train.ema import update_ema
from progan.train.trainer import Trainer

LAGS = (1, 4, 16, 64)


def parse_variants(text: str) -> dict[str, dict[str, float]]:
    """'r05,r005,hl3' -> {'r05': {'rampup': 0.05}, 'r005': {'rampup': 0.005}, 'hl3': {...}}."""
    out: dict[str, dict[str, float]] = {}
    for name in (t.strip() for t in text.split(",") if t.strip()):
        if name.startswith("hl"):
            out[name] = {"steps": float(name[2:])}
        elif name.startswith("r") and name[1:].isdigit():
            out[name] = {"rampup": float("0." + name[1:])}
        else:
            raise SystemExit(f"bad variant {name!r}: use rDIGITS (ramp-up 0.DIGITS) or hlN")
    return out


def ema_decay(images: int, batch: int, ema_beta: float, rampup=None, steps=None) -> float:
    """The per-step decay of one variant (``rampup``: as ``Trainer.ema_beta``)."""
    if steps is not None:
        return 0.5 ** (1.0 / steps)
    half_life = batch * math.log(0.5) / math.log(ema_beta)
    half_life = min(half_life, max(images * rampup, batch))
    return 0.5 ** (batch / half_life)


def image_stats(images: torch.Tensor) -> list[list[float]]:
    """[[mean R, G, B], [per-image std R, G, B]] of float images in [-1, 1], in uint8 units."""
    x = to_uint8(images).float()
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(2, 3)).mean(0).tolist()
    return [[round(v, 1) for v in mean], [round(v, 1) for v in std]]


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the correlation of a[i] and b[i] (each centred on its mean)."""
    a = (a - a.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    b = (b - b.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--resolution", type=int)
    p.add_argument("--phase-kimg", type=float)
    p.add_argument("--kimg", type=float, required=True)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cond", action="store_true")
    p.add_argument("--mirror", action="store_true")
    p.add_argument("--every", type=int, default=50, help="G steps between records [50]")
    p.add_argument("--variants", default="r05,r02,r01,hl10,hl3")
    p.add_argument("--save-at", default="", help="kimg at which to save every generator")
    p.add_argument("--out", required=True, help="output folder")
    a = p.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"mirror": True} if a.mirror else {}
    cfg = configure(a.data, out, a.preset, a.resolution, a.cond, seed=a.seed, **extra)
    if a.phase_kimg:
        cfg.schedule.stabilize_kimg = cfg.schedule.fade_kimg = a.phase_kimg
    if a.lr:
        cfg.schedule.learning_rate, cfg.schedule.learning_rate_default = {}, a.lr
    cfg.schedule.total_kimg = a.kimg
    cfg.validate()
    tr = Trainer(cfg, out, progress=False)
    tr._open_stream_at(0)
    net = cfg.network
    z = torch.randn(1000, net.latent_size, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(1000) % net.label_size if net.label_size else None
    variants = parse_variants(a.variants)
    emas = {k: copy.deepcopy(tr.G_ema) for k in variants}
    save_at = sorted(float(t) for t in a.save_at.split(",") if t.strip())

    def save_all(folder: Path, st) -> None:
        folder.mkdir(exist_ok=True)
        for name, G in [("raw", tr.G), ("ema", tr.G_ema), *emas.items()]:
            extra = {"kimg": tr.images / 1000}
            path = folder / f"{name}.safetensors"
            ckpt.save_generator_snapshot(path, G.state_dict(), net, st.depth, st.alpha, extra=extra)

    history: list[torch.Tensor] = []  # the raw G's images of the first 32 latents, per step
    out_ema = None

    @torch.no_grad()
    def images(G, n, st):
        def rows(i):
            return labels[i : i + 100] if labels is not None else None

        return torch.cat([G(z[i : i + 100], rows(i), st.depth, st.alpha) for i in range(0, n, 100)])

    reals = torch.stack(
        [torch.as_tensor(tr.dataset[i][0]) for i in range(min(1000, len(tr.dataset)))]
    )
    data_stats = image_stats(reals.float() / 127.5 - 128.0 / 127.5)
    with open(out / "ema_dynamics.jsonl", "w") as log:
        t0 = time.time()
        while tr.images < tr.schedule.total_images:
            st = tr.schedule.at(tr.images)
            if st.phase_key != tr.phase_key:
                tr._enter_phase(st)
                history.clear()
                out_ema = None
            tr.train_step(st)  # includes the trainer's own EMA update
            for k, v in variants.items():
                update_ema(emas[k], tr.G, ema_decay(tr.images, st.batch_size, cfg.ema_beta, **v))
            tr.images += st.batch_size * cfg.d_steps
            tr.steps += 1
            while save_at and tr.images >= save_at[0] * 1000:
                save_all(out / f"at-{save_at.pop(0):05.1f}", st)
            with torch.no_grad():
                raw = tr.G(z[:32], labels[:32] if labels is not None else None, st.depth, st.alpha)
            history = [*history[-LAGS[-1] :], raw]
            decay = ema_decay(tr.images, st.batch_size, cfg.ema_beta, rampup=0.05)
            out_ema = raw.clone() if out_ema is None else out_ema.lerp_(raw, 1 - decay)
            if tr.steps % a.every:
                continue
            rec = {"step": tr.steps, "kimg": tr.images / 1000, "res": st.resolution,
                   "alpha": round(st.alpha, 3), "seconds": round(time.time() - t0)}  # fmt: skip
            rec["raw"] = image_stats(images(tr.G, 200, st))
            rec.update({k: image_stats(images(m, 200, st)) for k, m in emas.items()})
            rec["raw32"], rec["out_ema32"] = image_stats(raw), image_stats(out_ema)
            if "r05" in emas:
                rec["r05_32"] = image_stats(images(emas["r05"], 100, st)[:32])
            rec["corr"] = {
                lag: round(correlation(raw, history[-1 - lag]), 3)
                for lag in LAGS
                if len(history) > lag
            }
            means = torch.stack([x.mean(dim=(0, 2, 3)) for x in history]) * 127.5
            rec["colour_swing"] = [round(v, 1) for v in means.std(0).tolist()]
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
    st = tr.schedule.at(tr.images)
    final = {"data": data_stats, "kimg": tr.images / 1000, "steps": tr.steps}
    for name, G in [("raw", tr.G), *emas.items()]:
        final[name] = image_stats(images(G, 1000, st))
    save_all(out, st)
    (out / "final.json").write_text(json.dumps(final, indent=1))
    print(json.dumps(final))


if __name__ == "__main__":
    main()
