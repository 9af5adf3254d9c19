"""Model building: the registry of image classifiers, their backbones and layers.

Importing this package registers every builtin model:

  from imgrec import models
  model = models.create_model("simple_cnn", num_classes=10,
                input_shape=(28, 28, 1))
  features = models.create_backbone("simple_cnn", (28, 28, 1))
"""

from imgrec.models import embedding  # noqa: F401  (registers its Keras objects)
from imgrec.models import scratch  # noqa: F401  (registers scratch models)
from imgrec.models import transfer  # noqa: F401  (registers transfer models)
from imgrec.models.layers import PositionEmbedding
from imgrec.models.layers import SobelEdges
from imgrec.models.registry import FEATURES
from imgrec.models.registry import backbone_of
from imgrec.models.registry import check_backbone
from imgrec.models.registry import classifier_head
from imgrec.models.registry import check_model
from imgrec.models.registry import create_backbone
from imgrec.models.registry import create_model
from imgrec.models.registry import get_model_cfg
from imgrec.models.registry import layers_within
from imgrec.models.registry import leaf_layers
from imgrec.models.registry import list_models
from imgrec.models.registry import register_model

__all__ = [
    "FEATURES",
    "PositionEmbedding",
    "SobelEdges",
    "backbone_of",
    "check_backbone",
    "classifier_head",
    "check_model",
    "create_backbone",
    "create_model",
    "get_model_cfg",
    "layers_within",
    "leaf_layers",
    "list_models",
    "register_model",
]
