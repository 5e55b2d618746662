"""The package version, on its own so that every layer can read it without importing the package's facade."""

__version__ = "0.2.0"
