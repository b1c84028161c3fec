"""Named checkpoints where the fault-injection tests (``tests/faults.py``) stop a job; inert unless
``DF4LCZ_KILL_AT`` is set.

``DF4LCZ_KILL_AT="PATTERN:N:SIGNAL:FLAG"``: the process that reaches a checkpoint whose name matches PATTERN
(``fnmatch``, e.g. ``rename lcz.tif`` or ``batch``) for the N-th time sends itself SIGNAL (``TERM`` or ``KILL``;
``STOP`` pauses it until a SIGCONT), once per FLAG file (created when it fires), so that a restarted Dask worker
inheriting the variable does not stop again and the test knows that the moment was reached. The variable is read
at each checkpoint, so a job run without it does one dictionary lookup per checkpoint.
"""

import fnmatch
import os
import signal

_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Checkpoint ``name`` (e.g. 'batch', 'tile', 'mosaic', 'clear', 'rename <file name>')."""
    spec = os.environ.get("DF4LCZ_KILL_AT")
    if not spec:
        return
    pattern, n, signame, flag = spec.split(":", 3)
    if not fnmatch.fnmatchcase(name, pattern):
        return
    _counts[pattern] = _counts.get(pattern, 0) + 1
    if _counts[pattern] != int(n):
        return
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # fired already, in this process or another
    os.kill(os.getpid(), getattr(signal, f"SIG{signame}"))
