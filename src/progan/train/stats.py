"""Training statistics: JSON-lines log, TensorBoard scalars and images, progress bar.

``log.jsonl`` gets one JSON object per tick: kimg, tick, phase, resolution, alpha,
batch_size, learning_rate, losses, images_per_sec, sec_per_tick, seconds (since the run
started, resumes included) and time (UNIX seconds). TensorBoard is used when installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from progan.fileio import atomic_write_bytes


class StatsWriter:
    """Appends ticks to ``log.jsonl`` and mirrors scalars (and images) to TensorBoard."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.log_path = self.run_dir / "log.jsonl"
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir))
            except ImportError:  # TensorBoard is optional
                self.tb = None

    def truncate_after(self, kimg: float) -> float | None:
        """Drop log lines past ``kimg`` (work lost since the checkpoint being resumed), so
        that a resumed run's log has neither gaps nor duplicate kimg entries. Returns the
        kimg of the last line kept (None: no line)."""
        if not self.log_path.exists():
            return None
        kept, last = [], None
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                line_kimg = json.loads(line).get("kimg", 0.0)
            except ValueError:
                continue  # a line torn by a crash
            if line_kimg <= kimg + 1e-9:
                kept.append(line)
                last = line_kimg
        atomic_write_bytes(self.log_path, ("\n".join(kept) + "\n" if kept else "").encode())
        return last

    def write(self, record: dict[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            step = round(record["kimg"] * 1000)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("time",):
                    self.tb.add_scalar(key.replace(".", "/"), value, global_step=step)
            self.tb.flush()

    def image(self, tag: str, grid: np.ndarray, kimg: float) -> None:
        """Log an HWC (or HW) uint8 grid to TensorBoard."""
        if self.tb is not None:
            img = grid if grid.ndim == 3 else grid[:, :, None]
            self.tb.add_image(tag, img, global_step=round(kimg * 1000), dataformats="HWC")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
