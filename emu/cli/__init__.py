"""The command line (s2emu) and what one invocation sets up around a machine."""
from .main import main

__all__ = ["main"]
