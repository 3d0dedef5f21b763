"""repogen: build Falco drivers for a kernel matrix and publish them as a static tree."""

__version__ = "0.1.0"
