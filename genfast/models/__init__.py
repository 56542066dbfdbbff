"""genfast's generative models, each registered by name in MODELS (see base.py).

Importing this package registers every model; ``build_model(name, **config)`` builds one.
One import per line, so each model family adds itself with a one-line change.
"""
from genfast.models.base import MODELS, GenerativeModel, build_model, register  # noqa: F401
from genfast.models import independent  # noqa: F401
from genfast.models import pixelcnn  # noqa: F401
from genfast.models import gated_pixelcnn  # noqa: F401
from genfast.models import pixelcnn_pp  # noqa: F401
from genfast.models import pixelrnn  # noqa: F401
from genfast.models import vae  # noqa: F401
from genfast.models import autoencoder  # noqa: F401
from genfast.models import dcgan  # noqa: F401
