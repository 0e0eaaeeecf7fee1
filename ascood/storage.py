"""Every output path goes through here: local directories and object storage (s3://, gs://).

Paths are URIs or local paths; pyarrow's filesystems resolve both. Local writes are atomic (temp
file in the same directory, then rename); object stores make a single PUT atomic by themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# How every Parquet file is written, pinned so files written by different pyarrow releases (a
# driver and its workers, a sweep resumed after an upgrade) agree: format 2.6 keeps int32 and
# string annotations every engine maps alike; the Arrow schema is stored for exact round trips.
PARQUET_OPTIONS = {"version": "2.6", "compression": "snappy", "use_dictionary": True, "write_statistics": True,
                   "store_schema": True}


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def resolve(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a URI or a local path (made absolute)."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(str(location))
    return pafs.LocalFileSystem(), str(Path(location).absolute())


def join(location: str | Path, *parts: str) -> str:
    base = str(location).rstrip("/")
    return "/".join([base, *parts])


def exists(location: str | Path) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_table(location: str | Path, table: pa.Table) -> None:
    """Write one Parquet file with `PARQUET_OPTIONS`; its schema's metadata goes into the file's
    key-value metadata. A local write's temporary file is hidden (`.name.tmpPID`) and matches no
    `*.parquet` glob, so a reader never sees a half-written file."""
    fs, path = resolve(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}")
        pq.write_table(table, tmp, **PARQUET_OPTIONS)
        os.replace(tmp, path)
    else:
        with fs.open_output_stream(path) as out:
            pq.write_table(table, out, **PARQUET_OPTIONS)


def read_table(location: str | Path) -> pa.Table:
    fs, path = resolve(location)
    return pq.read_table(path, filesystem=fs)


def list_files(location: str | Path, suffix: str = "") -> list[str]:
    """Files under a directory (recursively), as paths on its filesystem; [] if it does not exist."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    names = [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)]
    return sorted(n for n in names if not Path(n).name.startswith("."))


def names(location: str | Path) -> list[str]:
    """The names directly in a directory (not recursive); [] if it does not exist."""
    fs, path = resolve(location)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(Path(i.path).name for i in fs.get_file_info(pafs.FileSelector(path)))


def move(src: str | Path, dst: str | Path) -> None:
    fs, a = resolve(src)
    fs.move(a, resolve(dst)[1])


def delete(location: str | Path) -> None:
    fs, path = resolve(location)
    fs.delete_file(path)


def read_bytes(loc: str) -> bytes:
    fs, path = resolve(loc)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(loc: str) -> str | None:
    fs, path = resolve(loc)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    return read_bytes(loc).decode()


def write_text(loc: str, text: str) -> None:
    fs, path = resolve(loc)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def has_entries(loc: str) -> bool:
    """True when the directory (or prefix) exists and holds anything."""
    fs, path = resolve(loc)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return False
    return bool(fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True)))


def delete_tree(loc: str) -> None:
    fs, path = resolve(loc)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def copy_tree(src: str, dst: str) -> None:
    """Copy a directory between a local path and a URI (either way); a missing source is a no-op."""
    sfs, spath = resolve(src)
    if sfs.get_file_info(spath).type != pafs.FileType.Directory:
        return
    dfs, dpath = resolve(dst)
    dfs.create_dir(dpath, recursive=True)
    pafs.copy_files(spath, dpath, source_filesystem=sfs, destination_filesystem=dfs)


def unusable_dir(location: str | Path) -> str | None:
    """Why a local `location` cannot be (or become) a writable directory, or None if it can.
    Checked before anything is created; object-storage URIs are checked by writing (cluster sweeps)."""
    if is_uri(location):
        return None
    path = Path(location).expanduser().absolute()
    if path.exists() and not path.is_dir():
        return "exists and is not a directory"
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot be created: {ancestor} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be {'written' if ancestor == path else 'created'}: {ancestor} is not writable"
    if ancestor != path:  # a filesystem may refuse what the permissions allow (/proc, a read-only mount)
        probe = path
        while probe.parent != ancestor:
            probe = probe.parent
        try:
            probe.mkdir()
        except OSError as exc:
            return f"cannot be created in {ancestor}: {exc.strerror or exc}"
        probe.rmdir()
    return None
