"""The fully convolutional network: architecture, inference, training, bundled weights."""

from .infer import predict
from .model import AtomNet
from .weights import Model, bundled_models, load_model, save_model

__all__ = ["AtomNet", "Model", "load_model", "save_model", "bundled_models", "predict"]
