"""The model zoo: one file per model family, one registry, `create_model` as the front door.

Modules, bottom up: `card_schema` (a card's field limits and checks), `card_v1` (reading schema-1
cards), `card` (the typed model card) and `checkpoint` (the file format), `adapt` (channel and dimension
math), `external` (ResNet weights from torchvision, timm, MedicalNet), `registry` (names), `acs` (ACS
convolutions, used by the ResNet family), `hub` (where a published file or a Hub id's file lives), `catalog` (what is published, for people), `factory`
(create_model, model_from_checkpoint), `export` (the front door to `export_onnx`, `export_torchscript` and
`export_bundle`, which builds on `export_bundle_preprocessing`; all share `export_common`). Nothing below
imports what stands above it.
"""

# Each family module is imported here, by name, so that its @register_model entrypoints are known;
# adding a family means adding one line below.
from medzoo.zoo import resnet  # noqa: F401
from medzoo.zoo.catalog import info
from medzoo.zoo.catalog import published as list  # noqa: A004 - medzoo.zoo.list(), as `medzoo zoo list`
from medzoo.zoo.factory import create_model, model_from_checkpoint
from medzoo.zoo.registry import is_model, list_models, register_model

__all__ = ["create_model", "info", "is_model", "list", "list_models", "model_from_checkpoint", "register_model"]
