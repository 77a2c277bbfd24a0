"""Reading a protocol folder (store.schema: PROTOCOL_TABLES): every table under its current column names."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .schema import PROTOCOL_RENAMED_COLUMNS, PROTOCOL_TABLES


def read_protocol_table(file) -> pd.DataFrame:
    """One table of a protocol folder under its current column names (an empty frame for a missing file); an
    unreadable file raises naming it."""
    file = Path(file)
    try:
        frame = pd.read_parquet(file) if file.is_file() else pd.DataFrame()
    except Exception as error:
        raise ValueError(f"{file}: not a readable Parquet file ({error})") from error
    renames = {old: new for old, new in PROTOCOL_RENAMED_COLUMNS.items()
               if old in frame.columns and new not in frame.columns}
    return frame.rename(columns=renames) if renames else frame


def read_protocol_tables(folder) -> dict[str, pd.DataFrame]:
    """name -> table (read_protocol_table) for each of PROTOCOL_TABLES."""
    return {name: read_protocol_table(Path(folder) / f"{name}.parquet") for name in PROTOCOL_TABLES}
