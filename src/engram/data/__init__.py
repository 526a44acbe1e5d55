"""Data loaders: bundled digits, MNIST by path, and the shared data folder's location."""

from engram.data.images import binarize, load_digits_patterns, load_mnist
from engram.data.location import data_root
from engram.data.locomo import load_locomo

__all__ = ["binarize", "data_root", "load_digits_patterns", "load_locomo", "load_mnist"]
