"""medzoo: a model zoo and training toolkit for medical image classification."""

__version__ = "0.1.0"
