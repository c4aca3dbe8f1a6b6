"""The model zoo: one file per model family, one registry, `create_model` as the front door."""

# Each family module is imported here, by name, so that its @register_model entrypoints are known;
# adding a family means adding one line below.
from medzoo.zoo import resnet  # noqa: F401
from medzoo.zoo.registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
