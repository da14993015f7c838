"""The package's version, in one place the kernel and every wing can import without a circle."""

__version__ = "0.1.0"
