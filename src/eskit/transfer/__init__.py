"""Moving a store's events: export to an archive, import from one, copy store to store.

Every tool writes events at their exact positions with their ids and recorded
times, streams (memory stays flat in store size), reports progress through a
:class:`~eskit.transfer.progress.Progress`, and can be interrupted and run again
without writing an event twice or skipping one.
"""

from eskit.transfer.archive import ArchiveError, ArchiveHeader, ArchiveReader, ArchiveSummary, ArchiveWriter, Decode
from eskit.transfer.jobs import (
    CopyResult,
    CopyState,
    ImportResult,
    NotEmpty,
    carry_erasures,
    check_archive,
    copy_store,
    export_store,
    import_store,
    single_feed,
)
from eskit.transfer.loader import Diverged, Loader, MissingEvents
from eskit.transfer.progress import Advance, Progress, quiet

__all__ = [
    "Advance",
    "ArchiveError",
    "ArchiveHeader",
    "ArchiveReader",
    "ArchiveSummary",
    "ArchiveWriter",
    "CopyResult",
    "CopyState",
    "Decode",
    "Diverged",
    "ImportResult",
    "Loader",
    "MissingEvents",
    "NotEmpty",
    "Progress",
    "carry_erasures",
    "check_archive",
    "copy_store",
    "export_store",
    "import_store",
    "quiet",
    "single_feed",
]
