"""Find a dataset's root folder from config or the environment, fetching public sets when allowed."""

from __future__ import annotations

from pathlib import Path

from medzoo.datasets.fetch import default_data_home as data_home
from medzoo.datasets.fetch import fetch_dataset
from medzoo.errors import DataError


def resolve_root(root: str | None, folder: str, marker: str, fetch: str | None = None) -> Path:
    """The data root: `data.root` when set; else `<data home>/<folder>` (or the data home itself when it
    holds `marker`); else, for public sets, a download into the data home."""
    if root:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"data root not found: {path} (data.root). Set data.root=PATH to the folder that "
                            f"holds {marker}/, or leave data.root unset and set MEDZOO_DATA to its parent.")
        return path
    home = data_home()
    for candidate in (home / folder, home):
        if (candidate / marker).is_dir():
            return candidate
    if fetch:
        return fetch_dataset(fetch, home)
    raise DataError(f"data root not found: data.root is not set and neither {home / folder} nor {home} holds "
                    f"{marker}/. Set data.root=PATH or MEDZOO_DATA=PARENT_FOLDER.")
