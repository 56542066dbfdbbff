"""Training, evaluation, checkpoints and sample grids for genfast's models (``genfast train``
and ``genfast sample``)."""
