"""Offline data sets built from Debian packages: `scenes` (with object masks) and Fashion-MNIST."""

from .fashion_mnist import build_fashion_mnist
from .scenes import build_scenes
from .sources import DataKitError

__all__ = ["DataKitError", "build_fashion_mnist", "build_scenes"]
