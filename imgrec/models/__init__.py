"""Model building: the registry of image classifiers and their custom layers.

Importing this package registers every builtin model:

  from imgrec import models
  model = models.create_model("simple_cnn", num_classes=10,
                input_shape=(28, 28, 1))
"""

from imgrec.models import scratch  # noqa: F401  (registers scratch models)
from imgrec.models import transfer  # noqa: F401  (registers transfer models)
from imgrec.models.layers import PositionEmbedding
from imgrec.models.layers import SobelEdges
from imgrec.models.registry import check_model
from imgrec.models.registry import create_model
from imgrec.models.registry import get_model_cfg
from imgrec.models.registry import list_models
from imgrec.models.registry import register_model

__all__ = [
    "PositionEmbedding",
    "SobelEdges",
    "check_model",
    "create_model",
    "get_model_cfg",
    "list_models",
    "register_model",
]
