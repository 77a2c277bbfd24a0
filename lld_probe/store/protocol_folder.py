"""Reading a protocol folder (store.schema: PROTOCOL_TABLES): every table under its current column names."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .schema import PROTOCOL_RENAMED_COLUMNS, PROTOCOL_TABLES


def read_protocol_tables(folder) -> dict[str, pd.DataFrame]:
    """name -> table (an empty frame for a missing file); an unreadable file raises naming it."""
    tables = {}
    for name in PROTOCOL_TABLES:
        file = Path(folder) / f"{name}.parquet"
        try:
            frame = pd.read_parquet(file) if file.is_file() else pd.DataFrame()
        except Exception as error:
            raise ValueError(f"{file}: not a readable Parquet file ({error})") from error
        renames = {old: new for old, new in PROTOCOL_RENAMED_COLUMNS.items()
                   if old in frame.columns and new not in frame.columns}
        tables[name] = frame.rename(columns=renames) if renames else frame
    return tables
