"""From catalog chunks to model inputs: kept for imports; the stage is :mod:`convention_rt.transform`.

``chunk_to_inputs`` is :func:`convention_rt.transform.to_inputs`.
"""

from __future__ import annotations

from convention_rt.transform import ModelInputs, relative_times
from convention_rt.transform import to_inputs as chunk_to_inputs

__all__ = ["ModelInputs", "chunk_to_inputs", "relative_times"]
