"""progan.tools: pictures and videos made from datasets, runs and generators.

* ``grid``: image grids (``make_grid``, ``save_image_grid``), real-image and class-row grids.
* ``video``: latent interpolation videos (paper Section 6.3) and training time-lapses.
* ``mp4``: atomic H.264 MP4 writing through imageio-ffmpeg's bundled ffmpeg.
* ``neighbors``: nearest training images of generated images (paper Figure 10).
* ``align``: CelebA-HQ-style oriented face crops from five landmarks (paper Appendix C).
* ``commands``: the ``progan video/timelapse/neighbors/grid`` and
  ``progan dataset align-faces`` command-line front ends.
"""
