"""Storage: the seam (`base.Storage`), its drivers (SQLite, MongoDB) and the collection table."""

from __future__ import annotations

import os

from ..config import Config
from .base import Storage
from .files_base import FileStore

DB_FILE = "ewms.sqlite3"


def open_storage(cfg: Config) -> tuple[Storage, str]:
    """The configured driver, and a line saying where the data lives (for the start-up log)."""
    if cfg.mongodb_url:
        from .mongodb import MongoStorage

        if not cfg.mongodb_url.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("EWMS_MONGODB_URL must start with mongodb:// or mongodb+srv://")
        host = cfg.mongodb_url.split("://", 1)[1].split("@")[-1].split("/")[0]  # no credentials
        return MongoStorage.from_url(
            cfg.mongodb_url, cfg.mongodb_db
        ), f"MongoDB at {host}, database {cfg.mongodb_db}"
    from .sqlite import SQLiteStorage

    path = os.path.join(make_data_dir(cfg.data_dir), DB_FILE)
    store = SQLiteStorage(
        path,
        synchronous=cfg.sqlite_synchronous,
        busy_timeout_s=cfg.sqlite_busy_timeout_s,
        readers=cfg.sqlite_readers,
        query_workers=cfg.sqlite_query_workers,
    )
    return store, f"SQLite at {path} (synchronous={cfg.sqlite_synchronous})"


def open_file_store(cfg: Config, storage: Storage) -> FileStore:
    """The file cache beside the store: GridFS in a real MongoDB's database, else a directory
    `files` in EWMS_DATA_DIR (also for mongomock in tests, which has no GridFS)."""
    from .mongodb import MongoStorage

    if cfg.mongodb_url and isinstance(storage, MongoStorage):
        from .files_gridfs import GridFSFileStore

        return GridFSFileStore(storage.database)
    from .files_dir import DirectoryFileStore

    return DirectoryFileStore(os.path.join(make_data_dir(cfg.data_dir), "files"))


def make_data_dir(path: str) -> str:
    """Create EWMS_DATA_DIR (and parents) readable by this user only."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # makedirs' mode is filtered by the umask
    return path
