"""server_stub package."""
__version__ = "0.1.0"
