"""The package version, in a module of its own: checkpoints and model files record it, and
importing it from ``invae/__init__`` would make every such module import the whole package."""

__version__ = "0.1.0"
