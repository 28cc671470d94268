"""Moving a folder aside instead of replacing it: BasicSR's ``<name>_archived_<time>`` convention."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional


def archive_previous(folder: Path) -> Optional[Path]:
    """Move a non-empty ``folder`` to ``<name>_archived_<time>[_n]``; the new path, or None."""
    if not (folder.is_dir() and any(folder.iterdir())):
        return None
    stem = f"{folder.name}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
    archived, n = folder.with_name(stem), 1
    while archived.exists():
        archived, n = folder.with_name(f"{stem}_{n}"), n + 1
    folder.rename(archived)
    return archived
