"""``progan explore``: a local web app to look around in a trained generator.

* :mod:`~progan.explore.model` -- the computations (pages of samples by seed, interpolation
  on the latent hypersphere, depths, projected latents); plain torch, no web dependency;
* :mod:`~progan.explore.app` -- the Gradio user interface over it (optional extra
  ``pip install progan[explore]``; imported only by the command);
* :mod:`~progan.explore.commands` -- the ``progan explore`` command line.
"""
