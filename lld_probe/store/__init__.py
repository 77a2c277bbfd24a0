"""The run store: atomic Parquet/JSON writes and run provenance."""

from .atomic import write_json, write_parquet, write_text
from .provenance import provenance

__all__ = ["provenance", "write_json", "write_parquet", "write_text"]
