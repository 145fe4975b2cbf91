"""The growing schedule: phases, fade alpha, per-resolution tables."""

import itertools

import pytest

from progan.config import ScheduleConfig, preset
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
    assert cfg.schedule.total_kimg == 17 * 800
    # CelebA-HQ minibatch table.
    assert [s.batch_size(r) for r in (4, 128, 256, 512, 1024)] == [16, 16, 14, 6, 3]
    assert s.at(0).learning_rate == 0.001


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
