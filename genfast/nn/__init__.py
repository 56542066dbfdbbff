"""Drop-in nn.Modules built on genfast's fast ops."""
from genfast.nn.reparam import GaussianSample  # noqa: F401
from genfast.nn.masked_conv import MaskedConv2d  # noqa: F401
from genfast.nn.gated_pixelcnn import GatedPixelCNNLayer  # noqa: F401
from genfast.nn.pixelrnn import RowLSTM, DiagonalBiLSTM  # noqa: F401
