"""genfast's ops: public functions, their plain PyTorch references, and the torch.library ops."""
from genfast.ops.reparam import (  # noqa: F401
    gaussian_kl,
    gaussian_kl_ref,
    reparameterize,
    reparameterize_kl,
    reparameterize_kl_ref,
    reparameterize_ref,
)
from genfast.ops.masked_conv import conv_mask, masked_conv2d, masked_conv2d_ref  # noqa: F401
from genfast.ops.gated import gated_activation, gated_activation_ref  # noqa: F401
from genfast.ops.lstm_row_conv import lstm_rows_conv, lstm_rows_conv_ref  # noqa: F401
from genfast.ops.lstm_row import (  # noqa: F401
    lstm_row_step,
    lstm_row_step_ref,
    lstm_rows,
    lstm_rows_grouped,
    lstm_rows_ref,
)
from genfast.ops.sample_draw import categorical_draw, categorical_draw_ref  # noqa: F401
from genfast.ops.logistic_mixture import (  # noqa: F401
    logistic_mixture_nll,
    logistic_mixture_nll_ref,
    logistic_mixture_sample,
    logistic_mixture_sample_ref,
)
from genfast.ops.categorical_head import (  # noqa: F401
    categorical_head_nll,
    categorical_head_nll_ref,
)
