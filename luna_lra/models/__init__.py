"""Flax models for the LRA tasks. A model is one module defining MODEL (registry.py says how a
config finds it); classifier.py wraps its encoder with the shared embedding and head."""

from luna_lra.models.classifier import Classifier, build_model
from luna_lra.models.config import ModelConfig
from luna_lra.models.registry import (Model, defaults, get, label, model_config, switch,
                                      variant)

__all__ = ["Classifier", "Model", "ModelConfig", "build_model", "defaults", "get", "label",
           "model_config", "switch", "variant"]
