"""``genfast train`` and ``genfast sample`` (each module: ``register(subparsers)``)."""
