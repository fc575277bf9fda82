"""ASE databases (SQLite ``.db``, ``.json`` and OC20's LMDB ``.aselmdb``) through ``ase.db.connect``.

A row becomes a :class:`Sample`: targets from the row's calculator results
(energy, forces, stress as ASE stores them), then ``key_value_pairs``, then
``data`` under the :class:`TargetSpec` names; ``tags`` from the row's tags;
``fixed`` from its FixAtoms constraints; ``meta`` gets the row ``id`` and any
``sid``, ``fid``, ``ref_energy`` found in key_value_pairs or data.

``.aselmdb`` needs the optional packages ``ase-db-backends`` and ``lmdb``
(ASE's ``connect`` imports ``ase_db_backends.aselmdb.LMDBDatabase`` for the
type ``"aselmdb"``); it is opened read-only without locks, as for training.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from molsym.data.readers.sample import Sample, sample_from_atoms
from molsym.data.readers.targets import TargetSpec

META_KEYS = ("sid", "fid", "ref_energy")
# File suffix -> ASE db type. Legacy OCP ``.lmdb`` files (pickled graphs) are not ASE dbs and are not read.
DB_TYPES = {".db": "db", ".json": "json", ".aselmdb": "aselmdb"}


def db_type(path, kind: str | None = None) -> str:
    """ASE db type of ``path``: ``"db"``, ``"json"`` or ``"aselmdb"`` (from the suffix unless ``kind`` is given)."""
    if kind is not None:
        if kind not in DB_TYPES.values():
            raise ValueError(f"{path}: unknown ASE db type '{kind}'; choose from {sorted(set(DB_TYPES.values()))}")
        return kind
    suffix = Path(path).suffix.lower()
    if suffix not in DB_TYPES:
        raise ValueError(f"{path}: cannot tell the ASE db type from suffix '{suffix}'; "
                         f"pass db_type_name= one of {sorted(set(DB_TYPES.values()))}")
    return DB_TYPES[suffix]


def connect_readonly(path, db_type_name: str | None = None):
    """Open an existing ASE db for reading (no lock file; LMDB read-only, no readahead).

    The caller owns the handle; readers use :func:`open_shared` instead, since
    lmdb allows one open environment per file and process.
    """
    import ase.db

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such database")
    kind = db_type(path, db_type_name)
    if kind == "aselmdb":
        try:
            import ase_db_backends.aselmdb  # noqa: F401  (what ase.db.connect imports for "aselmdb")
        except ImportError as error:
            raise ImportError(f"{path}: reading .aselmdb needs the optional packages 'ase-db-backends' and "
                              f"'lmdb' (pip install ase-db-backends lmdb)") from error
        return ase.db.connect(str(path), type="aselmdb", readonly=True, readahead=False, use_lock_file=False)
    return ase.db.connect(str(path), type=kind, use_lock_file=False)


def row_ids(db, kind: str) -> np.ndarray:
    """(R,) int64 row ids in storage order, without reading the rows of an LMDB."""
    if kind == "aselmdb":
        return np.asarray(db.ids, dtype=np.int64)
    return np.asarray([row.id for row in db.select(columns=["id"], include_data=False)], dtype=np.int64)


def row_to_sample(row, spec: TargetSpec, source: str, index: int) -> Sample:
    """One ASE db row -> :class:`Sample` (``index``: position of the row in the file)."""
    atoms = row.toatoms()
    key_value_pairs = dict(row.key_value_pairs)
    data = dict(row.data)
    meta = {"source": source, "index": index, "id": int(row.id)}
    for key in META_KEYS:
        for store in (key_value_pairs, data):
            if key in store:
                meta[key] = _plain(store[key])
                break
    where = f"{source}, row id {row.id} (position {index})"
    return sample_from_atoms(atoms, spec, where, extra_sources=(key_value_pairs, data), meta=meta)


def read_db_samples(path, spec: TargetSpec | None = None, selection=None, db_type_name: str | None = None) -> list[Sample]:
    """Every row of an ASE db (matching ``selection``, ASE's query syntax) in memory.

    For large LMDBs use :class:`molsym.data.readers.dataset.AseDbDataset`,
    which reads one row at a time.
    """
    spec = spec or TargetSpec()
    db = open_shared(path, db_type(path, db_type_name))
    return [row_to_sample(row, spec, str(path), position) for position, row in enumerate(db.select(selection))]


def _plain(value):
    """numpy scalars -> Python numbers (for meta)."""
    return value.item() if isinstance(value, np.generic) else value


def close_db(db, kind: str) -> None:
    """Release an LMDB environment (SQLite and JSON dbs hold no open handle between calls)."""
    if kind == "aselmdb":
        db.close()


# This process's read-only handles, (path, device, inode, type) -> db. lmdb refuses to open one
# environment twice in a process, so every reader of a file shares one handle.
_SHARED: dict[tuple, object] = {}
_SHARED_PID = [os.getpid()]


def open_shared(path, kind: str):
    """This process's read-only handle on the db at ``path`` (opened on first use).

    After a fork the parent's handles are released first (see
    :func:`_release_inherited`), so DataLoader workers and DDP ranks each
    open their own. A file replaced at the same path (new inode) gets a new handle.
    """
    if _SHARED_PID[0] != os.getpid():
        for key, db in _SHARED.items():
            _release_inherited(db, key[-1])
        _SHARED.clear()
        _SHARED_PID[0] = os.getpid()
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such database")
    status = path.stat()
    key = (str(path), status.st_dev, status.st_ino, kind)
    if key not in _SHARED:
        _SHARED[key] = connect_readonly(path, kind)
    return _SHARED[key]


def close_shared(path=None) -> None:
    """Close this process's shared handles on ``path`` (all of them if None); they reopen on next use."""
    if _SHARED_PID[0] != os.getpid():
        return
    wanted = None if path is None else str(Path(path).resolve())
    for key in [k for k in _SHARED if wanted is None or k[0] == wanted]:
        close_db(_SHARED.pop(key), key[-1])


def _release_inherited(db, kind: str) -> None:
    """Close, in a forked child, an LMDB environment that the parent process opened.

    A forked child inherits the parent's open environment, and lmdb will not
    open the same file again while it is open. ``LMDBDatabase.close`` cannot
    release it (it reopens the environment first when the pid changed), hence
    the direct close of its ``_env``; marking it as this process's then lets
    its finaliser close it again, which lmdb ignores. SQLite and JSON dbs hold
    nothing open.
    """
    if kind == "aselmdb":
        environment = db.__dict__.get("_env")
        if environment is not None:
            environment.close()
        db.__dict__["_env_pid"] = os.getpid()
