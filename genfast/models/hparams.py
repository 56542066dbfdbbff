"""Checks of model hyperparameters that give a clear error instead of a failure deep in torch."""
from __future__ import annotations

import genfast


def check_positive_int(value, name: str, model: str) -> int:
    """``value`` if it is an int >= 1, else a ValueError naming the hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"genfast: {model} needs {name} to be an int >= 1, got {value!r}")
    return value


def check_backend(backend: str | None, model: str) -> str | None:
    """``backend`` if genfast knows it (None and 'auto' included), else a ValueError."""
    if backend is not None and backend != "auto" and backend not in genfast.BACKENDS:
        raise ValueError(f"genfast: {model} got backend={backend!r}; choose None, 'auto' or one "
                         f"of {genfast.BACKENDS}")
    return backend
