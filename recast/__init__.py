"""recast: batch head and face replacement with provenance."""
from recast import _threadsafe_ast

_threadsafe_ast.install()

__version__ = "0.1.0"
