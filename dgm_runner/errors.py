"""The errors that are the user's to fix, in one tuple: the command-line apps print them as
one ``<prog>: error: <Kind>: ...`` line without a traceback, and a run refused by one of
them in a directory that held a run records nothing there
(:func:`dgm_runner.run.record_outcome`)."""

from __future__ import annotations

from dgm_runner.config import ConfigError
from dgm_runner.data.base import DataError
from dgm_runner.evaluation import NonFiniteError
from dgm_runner.io.atomic import WriteError
from dgm_runner.io.checkpoint import CheckpointError
from dgm_runner.io.lock import RunDirLocked

#: An invalid value, missing or corrupt data, an unusable checkpoint, a full disk, a run
#: directory another process holds, a non-finite metric of an evaluation.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    WriteError,
    RunDirLocked,
    NonFiniteError,
)
