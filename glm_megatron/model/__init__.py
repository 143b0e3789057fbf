"""The GLM transformer: one configurable model for every GLM generation."""

from .glm import GLMForCausalLM, GLMForSequenceClassification, GLMModel  # noqa: F401
