"""progan.data: dataset preparation and loading.

* :mod:`~progan.data.dataset` -- the dataset format (zip or folder of square PNGs plus
  ``dataset.json``): ``ImageDataset`` (reader) and ``DatasetWriter`` (crash-safe writer);
* :mod:`~progan.data.source_base` -- the ``Source`` interface and the readers of image
  folders and zips;
* :mod:`~progan.data.readers` -- readers for CIFAR-10, MNIST/Fashion-MNIST, LSUN LMDB, CelebA;
* :mod:`~progan.data.sources` -- source-type detection and ``open_source``;
* :mod:`~progan.data.images` -- decoding, colour conversion and square transforms;
* :mod:`~progan.data.create` -- ``create_dataset``, ``make_synthetic_dataset`` and
  ``dataset_info``;
* :mod:`~progan.data.synthetic` -- the built-in ``synthetic:shapes`` dataset;
* :mod:`~progan.data.loader` -- ``RealImageStream``, the deterministic training stream;
* :mod:`~progan.data.commands` -- ``progan dataset create`` / ``progan dataset info``.

Submodules are imported on demand (this package imports nothing heavy).
"""
