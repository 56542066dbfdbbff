"""Drop-in nn.Modules built on genfast's fast ops."""
from genfast.nn.reparam import GaussianSample  # noqa: F401
