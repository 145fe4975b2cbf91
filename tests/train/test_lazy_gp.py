"""The lazy gradient penalty in the training step (LossConfig.gp_every, --gp-every): which D
steps compute it, with what weight, and that the run's D-step clock survives a resume."""

import copy
import json

import pytest
import torch
from micro import make_micro_config

from progan.train import checkpoint as ckpt
from progan.train import step as step_module
from progan.train.api import train
from progan.train.trainer import Trainer


def _trainer(data, outdir, gp_every, **kw):
    cfg = make_micro_config(data, outdir, phase_kimg=1.0, total_kimg=2.0, tick_kimg=0.064, **kw)
    cfg.loss.gp_every = gp_every
    trainer = Trainer(cfg, outdir, progress=False)
    trainer._open_stream_at(0)
    return trainer


def _weights(trainer):
    return [
        p.detach().clone() for m in (trainer.G, trainer.D, trainer.G_ema) for p in m.parameters()
    ]


def _independent_d_loss(D, depth, alpha, reals, fakes, rng_state, lam, drift, device="cpu"):
    """WGAN-GP + drift written out here: mean D(fake) - mean D(real) + lam * mean penalty +
    drift * mean D(real)^2, the penalty's mixing factors drawn from ``rng_state`` (or no
    penalty when ``lam`` is 0)."""
    real, _ = D(reals, depth, alpha)
    fake, _ = D(fakes, depth, alpha)
    loss = fake.mean() - real.mean() + drift * real.square().mean()
    if lam:
        g = torch.Generator(device).manual_seed(0)
        g.set_state(rng_state)
        u = torch.rand(reals.shape[0], 1, 1, 1, generator=g)
        mixed = (reals + u * (fakes - reals)).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(mixed, depth, alpha)[0].sum(), mixed)
        loss = loss + lam * (grad.flatten(1).norm(dim=1) - 1.0).square().mean()
    return loss


def test_every_second_d_step_penalized_with_twice_the_weight(shapes8, tmp_path, monkeypatch):
    trainer = _trainer(shapes8, tmp_path, gp_every=2, d_steps=3)
    calls = []
    real_loss = step_module.discriminator_loss

    def spy(cfg, d_fn, reals, fakes, *args, **kw):
        # D before this D step's update, and the RNG where the penalty draws its factors
        calls.append((copy.deepcopy(trainer.D), reals.clone(), fakes.clone(),
                      trainer.rng.get_state(), kw["apply_gp"]))  # fmt: skip
        loss, stats = real_loss(cfg, d_fn, reals, fakes, *args, **kw)
        calls[-1] += (loss.detach().clone(), stats)
        return loss, stats

    monkeypatch.setattr(step_module, "discriminator_loss", spy)
    st = trainer.schedule.at(0)
    logged = [trainer.train_step(st)]  # D steps 0, 1, 2 (the stats: of the last one)
    logged.append(trainer.train_step(st))  # D steps 3, 4, 5
    trainer.stream.close()
    # logged penalty: 2x the penalty of a penalized last D step (step 2), 0 otherwise (step 5)
    torch.testing.assert_close(logged[0]["D/gradient_penalty"], 2 * calls[2][6]["gradient_penalty"])
    assert logged[1]["D/gradient_penalty"].item() == 0.0
    assert trainer.d_steps_done == 6
    assert [c[4] for c in calls] == [True, False, True, False, True, False]
    lam, drift = trainer.cfg.loss.gp_lambda, trainer.cfg.loss.drift
    assert trainer.cfg.loss.gp_target == 1.0 and drift > 0
    for D0, reals, fakes, rng_state, due, loss, stats in calls:
        assert ("gradient_penalty" in stats) == due  # discriminator_loss's own stats
        expected = _independent_d_loss(
            D0, st.depth, st.alpha, reals, fakes, rng_state, 2 * lam if due else 0.0, drift
        )
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-6)
        if due:  # and not the paper's weight: the factor 2 is visible in the value
            plain = _independent_d_loss(D0, st.depth, st.alpha, reals, fakes, rng_state, lam, drift)
            assert abs(plain.item() - loss.item()) > 1e-4


def test_gp_every_one_penalizes_every_step_whatever_the_clock(shapes8, tmp_path):
    """gp_every = 1 (the paper): the D-step clock plays no part, so the step is the step
    before the lazy penalty existed; with gp_every = 2 the clock's parity changes the result."""
    runs = {}
    for k in (1, 2):
        for start in (0, 1):
            t = _trainer(shapes8, tmp_path / f"{k}-{start}", gp_every=k)
            t.d_steps_done = start
            stats = t.train_step(t.schedule.at(0))
            t.stream.close()
            runs[k, start] = (_weights(t), stats["D/gradient_penalty"].item() > 0)
    for a, b in zip(runs[1, 0][0], runs[1, 1][0], strict=True):
        assert torch.equal(a, b)
    assert runs[1, 0][1] and runs[1, 1][1]
    assert runs[2, 0][1] and not runs[2, 1][1]
    assert any(not torch.equal(a, b) for a, b in zip(runs[2, 0][0], runs[2, 1][0], strict=True))


def _resume_config(data, outdir):
    # ticks of 3 steps of 16: the split after 3 ticks falls after D step 9, an odd one, so a
    # resumed run that lost the clock would penalize the wrong steps.
    cfg = make_micro_config(
        data, outdir, phase_kimg=0.2, total_kimg=1.0, tick_kimg=0.048, keep_checkpoints=2,
    )  # fmt: skip
    cfg.loss.gp_every = 2
    return cfg


def test_resume_with_lazy_penalty_gives_the_same_weights(shapes8, tmp_path):
    straight = train(_resume_config(shapes8, tmp_path / "a"), progress=False, max_ticks=6)
    split = train(_resume_config(shapes8, tmp_path / "b"), progress=False, max_ticks=3)
    _, half = ckpt.newest_valid_checkpoint(split)
    assert half["d_steps_done"] == 9
    train(resume=split, progress=False, max_ticks=3)
    _, s1 = ckpt.newest_valid_checkpoint(straight)
    _, s2 = ckpt.newest_valid_checkpoint(split)
    assert s1["d_steps_done"] == s2["d_steps_done"] == 18
    for key in ("G", "D", "G_ema"):
        for name, tensor in s1[key].items():
            torch.testing.assert_close(s2[key][name], tensor, rtol=0, atol=0, msg=f"{key}.{name}")
    lines1 = [json.loads(x) for x in (straight / "log.jsonl").read_text().splitlines()]
    lines2 = [json.loads(x) for x in (split / "log.jsonl").read_text().splitlines()]
    assert [x["D/loss"] for x in lines1] == pytest.approx([x["D/loss"] for x in lines2], abs=0)


def test_training_state_without_the_clock_still_loads(shapes8, tmp_path):
    """States written before the lazy penalty have no d_steps_done: steps * d_steps."""
    trainer = _trainer(shapes8, tmp_path, gp_every=1, d_steps=2)
    trainer.steps = 5
    state = trainer.state_dict()
    del state["d_steps_done"]
    trainer.stream.close()
    other = _trainer(shapes8, tmp_path / "o", gp_every=1, d_steps=2)
    other.load_state_dict(state)
    other.stream.close()
    assert other.d_steps_done == 10
