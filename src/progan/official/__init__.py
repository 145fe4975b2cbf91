"""The official ProGAN networks (``karras2018iclr-*.pkl``, TensorFlow era) without TensorFlow.

* :func:`load_official_networks` (path) -> ``(G, D, Gs)`` progan networks;
* :func:`read_official` (path) -> :class:`OfficialFile` (settings, weights, depth/fade);
* :func:`convert_official` (path, out) -> progan's safetensors snapshot + networks file.

Modules: ``unpickler`` (the restricted reader), ``mapping`` (official variables -> progan
weights), ``load`` (the API above), ``convert`` (files progan reads without the pickle).
"""

from progan.official.convert import convert_official
from progan.official.load import (
    OfficialFile,
    is_official_pickle,
    load_official_networks,
    read_official,
)

__all__ = [
    "OfficialFile",
    "convert_official",
    "is_official_pickle",
    "load_official_networks",
    "read_official",
]
