"""The installed layerinf's version (ground floor: every package may import it; it imports nothing)."""

__version__ = "0.1.0"
