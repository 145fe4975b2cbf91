"""Where the trainer and the training API used to live; they are now split by what they own:

* :mod:`progan.train.api`: ``configure`` and ``train``;
* :mod:`progan.train.trainer`: ``Trainer`` (state, optimizers, phases, ``state_dict``);
* :mod:`progan.train.step`: one training step; :mod:`progan.train.snapshots`: snapshots and
  metrics; :mod:`progan.train.run_loop`: ticks, signals and NaN recovery.

The names that scripts and the README imported from here still import from here.
"""

from progan.errors import TrainingDiverged
from progan.train.api import configure, train
from progan.train.snapshots import save_image_grid_reals
from progan.train.trainer import STATE_FORMAT, Trainer, resolve_device

__all__ = [
    "STATE_FORMAT",
    "Trainer",
    "TrainingDiverged",
    "configure",
    "resolve_device",
    "save_image_grid_reals",
    "train",
]
