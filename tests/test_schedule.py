"""The growing schedule: phases, fade alpha, per-resolution tables."""

import itertools
import math

import pytest

from progan.config import ScheduleConfig
from progan.presets import preset
from progan.schedule import Schedule


def test_paper_schedule_phases_and_alpha():
    cfg = preset("paper", resolution=1024)
    s = Schedule(cfg.schedule, 1024)
    assert s.at(0).resolution == 4 and s.at(0).alpha == 1.0
    assert s.at(799_999).resolution == 4
    st = s.at(800_000 + 400_000)  # half way through the 8x8 fade-in
    assert st.resolution == 8 and st.alpha == pytest.approx(0.5)
    assert s.at(1_600_000).resolution == 8 and s.at(1_600_000).alpha == 1.0
    st = s.at(1_600_000 + 800_000 + 200_000)  # a quarter into the 16x16 fade
    assert st.resolution == 16 and st.alpha == pytest.approx(0.25)
    # Fully grown after 8 fades and 9 stabilizations would begin: 16 phases of 800 kimg.
    assert s.at(16 * 800_000).resolution == 1024 and s.at(16 * 800_000).alpha == 1.0
    assert s.at(16 * 800_000 - 1).alpha < 1.0
    # Official preset-v1-1gpu: train.total_kimg = 19000, i.e. 6,200 kimg at 1024x1024 after
    # growing (official TrainingSchedule: lod reaches 0 at 8 * (800 + 800) kimg).
    assert cfg.schedule.total_kimg == 19_000
    segs = s.segments()
    assert segs[-1].resolution == 1024 and not segs[-1].fading
    assert (segs[-1].start_kimg, segs[-1].kimg) == (12_800, 6_200)
    # CelebA-HQ minibatch table.
    assert [s.batch_size(r) for r in (4, 128, 256, 512, 1024)] == [16, 16, 14, 6, 3]
    assert s.at(0).learning_rate == 0.001


def official_lod(kimg: float, resolution_log2: int, training: float, transition: float) -> float:
    """The official TrainingSchedule's level of detail (train.py), written out independently."""
    phase_dur = training + transition
    phase_idx = math.floor(kimg / phase_dur)
    phase_kimg = kimg - phase_idx * phase_dur
    lod = resolution_log2 - 2 - phase_idx
    if transition > 0:
        lod -= max(phase_kimg - training, 0.0) / transition
    return max(lod, 0.0)


@pytest.mark.parametrize(
    "name, resolution", [("paper", 1024), ("paper", 256), ("official-v2", 1024), ("tiny", 32)]
)
def test_schedule_depth_matches_the_official_lod(name, resolution):
    cfg = preset(name, resolution=resolution)
    s = Schedule(cfg.schedule, resolution)
    log2 = int(math.log2(resolution))
    a, b = cfg.schedule.stabilize_kimg, cfg.schedule.fade_kimg
    for images in [round(k * cfg.schedule.total_kimg * 1000 / 97) for k in range(97)]:
        want = log2 - 2 - official_lod(images / 1000, log2, a, b)
        assert s.depth_at(images) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_official_v2_tables(gpus):
    """Official config.py preset-v2-{1gpu,2gpus,4gpus,8gpus}: minibatch_base/dict and
    G/D_lrate_dict, 600 + 600 kimg phases, 12,000 kimg in total."""
    tables = {
        1: ([128, 128, 128, 64, 32, 16, 8, 4, 4], {1024: 0.0015}),
        2: ([256, 256, 128, 64, 32, 16, 8, 8, 8], {512: 0.0015, 1024: 0.002}),
        4: ([512, 256, 128, 64, 32, 16, 16, 16, 16], {256: 0.0015, 512: 0.002, 1024: 0.003}),
        8: (
            [512, 256, 128, 64, 32, 32, 32, 32, 32],
            {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003},
        ),
    }
    cfg = preset("official-v2", resolution=1024, num_gpus=gpus)
    s = Schedule(cfg.schedule, 1024)
    res = [4 * 2**d for d in range(9)]
    batches, rates = tables[gpus]
    assert [s.batch_size(r) for r in res] == batches
    lr = {r: cfg.schedule.learning_rate.get(r, cfg.schedule.learning_rate_default) for r in res}
    assert lr == {r: rates.get(r, 0.001) for r in res}
    assert cfg.schedule.stabilize_kimg == cfg.schedule.fade_kimg == 600
    assert cfg.schedule.total_kimg == 12_000 and cfg.network.mbstd_group_size == 4
    # fully grown at 8 * 1200 = 9,600 kimg, then 2,400 kimg at 1024x1024
    assert s.segments()[-1].start_kimg == 9_600


def test_alpha_rises_linearly_during_fade():
    s = Schedule(ScheduleConfig(stabilize_kimg=10, fade_kimg=20, total_kimg=100), 32)
    alphas = [s.at(10_000 + k * 2_000).alpha for k in range(1, 10)]
    assert alphas == pytest.approx([k / 10 for k in range(1, 10)])


def test_phase_key_changes_exactly_at_fade_start_and_end():
    s = Schedule(ScheduleConfig(stabilize_kimg=1, fade_kimg=1, total_kimg=10), 16)
    keys = [s.at(i).phase_key for i in range(0, 10_000, 50)]
    changes = [i * 50 for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    # A fade starts with the first image past a stabilization phase and ends when alpha
    # reaches exactly 1 (sampled every 50 images here).
    assert changes == [1_050, 2_000, 3_050, 4_000]


def test_segments_cover_the_run():
    cfg = preset("tiny", resolution=16)
    s = Schedule(cfg.schedule, 16)
    segs = s.segments()
    assert [(g.resolution, g.fading) for g in segs] == [
        (4, False),
        (8, True),
        (8, False),
        (16, True),
        (16, False),
    ]
    assert segs[0].start_kimg == 0 and segs[-1].end_kimg == cfg.schedule.total_kimg
    assert all(a.end_kimg == b.start_kimg for a, b in itertools.pairwise(segs))


def test_no_growing_trains_full_resolution_throughout():
    s = Schedule(ScheduleConfig(growing=False, total_kimg=50), 64)
    assert {s.at(i).resolution for i in (0, 10_000, 49_000)} == {64}
    assert s.at(0).alpha == 1.0
    assert [(g.resolution, g.fading) for g in s.segments()] == [(64, False)]


def test_per_resolution_learning_rate_table():
    cfg = ScheduleConfig(stabilize_kimg=1, fade_kimg=1, learning_rate={8: 0.002}, total_kimg=5)
    s = Schedule(cfg, 16)
    assert s.at(0).learning_rate == 0.001
    assert s.at(1_500).learning_rate == 0.002  # fading in 8x8
