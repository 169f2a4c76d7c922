"""Training data readers. `ciciot` streams CICIoT2023 CSVs (both releases) and the
daemon's own ``ids-daemon features`` output onto the 46-column feature space."""

from .ciciot import (
    RELEASE_MERGED,
    RELEASE_METER,
    RELEASE_ORIGINAL,
    RELEASE_PARTIAL,
    CsvChunk,
    FileInfo,
    LoaderError,
    inspect_file,
    iter_chunks,
    list_csv_files,
)

__all__ = [
    "RELEASE_MERGED", "RELEASE_METER", "RELEASE_ORIGINAL", "RELEASE_PARTIAL",
    "CsvChunk", "FileInfo", "LoaderError", "inspect_file", "iter_chunks", "list_csv_files",
]
