"""progan.experiments: the paper's studies, reproducible at any scale.

* ``ablation``: Table 1 -- configurations (a)-(h), each switching on one contribution, trained
  at an equal budget; a table of SWD per pyramid level and MS-SSIM plus sample grids.
* ``convergence``: Figure 4 -- SWD per level against wall-clock time with and without
  progressive growing, and the training throughput (images/second) as resolution grows.
* ``commands``: the ``progan experiment ablation|convergence`` command line.

See docs/RESULTS.md for the commands and for what was actually run.
"""
