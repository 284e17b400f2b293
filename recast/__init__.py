"""recast: batch head and face replacement with provenance."""
__version__ = "0.1.0"
