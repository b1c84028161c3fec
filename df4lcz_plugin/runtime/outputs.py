"""Outputs never destroy data: they are checked against the inputs before anything is written, and written
under a temporary name that is renamed only when complete.

- ``check_output_paths``: an output may not be an input, two outputs may not share a file, an output may not
  be an existing folder, and its extension must name the format written. Every algorithm calls it first.
- ``atomic_output``: the temporary ``.<stem>.<host>-<pid>-<random>.partial<suffix>`` is removed on any error,
  on SIGTERM and SIGHUP (a signal handler removes every live one, then lets the signal end the process), and,
  when a process was killed outright (SIGKILL), by the next ``atomic_output`` into the same folder.
  ``scratch_folder`` gives intermediate files the same protection.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .kill_points import kill_point

#: GDAL writes category names and statistics of a GeoTIFF into this sidecar (PAM).
AUX_SUFFIX = ".aux.xml"
#: Signals that end a run and after which no partial file may remain (SIGINT raises KeyboardInterrupt,
#: which the ``finally`` of ``atomic_output`` already handles).
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

#: A path as the callers give it: a string or a path object.
PathLike = Union[str, "os.PathLike[str]"]
#: An input of ``check_output_paths``: one path, several, or None (an optional input not given).
InputValue = Union[PathLike, Iterable[Optional[PathLike]], None]

_live: set[str] = set()  # temporary files of the atomic outputs now open, in this process
_installed: dict[int, Any] = {}  # signal → the handler it had before ours


class OutputPathError(ValueError):
    """An output path would overwrite an input or another output, is a folder, or has the wrong extension."""


def _key(path: PathLike) -> str:
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def _same_file(a: PathLike, b: PathLike) -> bool:
    if _key(a) == _key(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:
        return False


def check_output_paths(inputs: Mapping[str, InputValue],
                       outputs: Mapping[str, tuple[Sequence[Optional[PathLike]], Optional[Sequence[str]]]]) -> None:
    """Refuse output paths that would lose data or mislabel a format, before anything is written.

    inputs: {parameter name: path, iterable of paths, or None} — every file the run reads (each one's ``.qml``
    style beside it, when there is one, is protected too).
    outputs: {parameter name: (paths, allowed suffixes)} — ``paths`` lists every file the output writes (the
    output first, then its sidecars: ``.aux.xml``, ``.qml``, a report's ``.csv``…); ``allowed suffixes``
    (lower case, e.g. ``(".tif", ".tiff")``) or None for any. Empty or None outputs are skipped.
    Raises OutputPathError naming the parameters and how to fix it.
    """
    read = _read_files(inputs)
    written: list[tuple[str, PathLike]] = []
    for name, (paths, suffixes) in outputs.items():
        kept = [p for p in paths if p]
        if not kept:
            continue
        _check_output_file(name, Path(kept[0]), suffixes)
        written += [(name, p) for p in kept]
    _check_no_input_written(read, written)
    _check_no_file_shared(written)


def _read_files(inputs: Mapping[str, InputValue]) -> list[tuple[str, PathLike]]:
    """(parameter name, path) of every file the run reads, each input's QGIS style beside it included."""
    read: list[tuple[str, PathLike]] = [
        (name, p) for name, value in inputs.items() if value
        for p in ([value] if isinstance(value, (str, os.PathLike)) else value) if p]
    # An input's QGIS style (<name>.qml beside it) is the user's work too: a .tiff output beside a .tif input
    # would write that very file.
    read += [(f"{name} style", Path(p).with_suffix(".qml")) for name, p in read
             if Path(p).suffix.lower() != ".qml" and Path(p).with_suffix(".qml").is_file()]
    return read


def _check_output_file(name: str, main: Path, suffixes: Optional[Sequence[str]]) -> None:
    """Raise OutputPathError when the output ``main`` is in a folder not writable by the user, is an existing
    folder, or does not end in one of ``suffixes`` (None: any)."""
    folder = next((p for p in main.absolute().parents if p.exists()), None)
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{name} ({main}) cannot be written: the folder {folder} is not writable by you; "
                              "choose an output in a folder of yours.")
    if main.is_dir():
        raise OutputPathError(f"{name} ({main}) is an existing folder; give a file name inside it, e.g. "
                              f"{main / ('output' + (suffixes[0] if suffixes else ''))}.")
    if suffixes and main.suffix.lower() not in suffixes:
        raise OutputPathError(f"{name} ({main}) must end in {' or '.join(suffixes)}: this output is always "
                              f"written in that format, never under another extension "
                              f"('{main.suffix or 'none'}'). Convert the result afterwards if you need another "
                              "format.")


def _check_no_input_written(read: list[tuple[str, PathLike]], written: list[tuple[str, PathLike]]) -> None:
    """Raise OutputPathError when a written file is a read one."""
    for out_name, out in written:
        for in_name, source in read:
            if _same_file(out, source):
                raise OutputPathError(f"{out_name} would overwrite the {in_name} input ({source}); choose another "
                                      "output file. Nothing was written.")


def _check_no_file_shared(written: list[tuple[str, PathLike]]) -> None:
    """Raise OutputPathError when two outputs (parameter names) would write the same file."""
    for i, (name_a, a) in enumerate(written):
        for name_b, b in written[i + 1:]:
            if name_a != name_b and _same_file(a, b):
                raise OutputPathError(f"{name_a} and {name_b} would both write {b}; give each output its own file "
                                      "name. Nothing was written.")


def geotiff_output(path: Optional[PathLike], style: bool = False
                   ) -> tuple[list[PathLike], Optional[tuple[str, ...]]]:
    """(files, suffixes) of a GeoTIFF output for ``check_output_paths``: the file, its ``.aux.xml`` and, with
    ``style``, its ``.qml``."""
    if not path:
        return [], None
    files = [path, f"{path}{AUX_SUFFIX}"] + ([str(Path(path).with_suffix(".qml"))] if style else [])
    return files, (".tif", ".tiff")


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def _remove_live_partials(signum: int, frame: Optional[FrameType]) -> None:
    for path in list(_live):
        _remove(path)
    previous = _installed.get(signum)
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)  # then die of the signal, as the sender meant
    os.kill(os.getpid(), signum)


def _install_signal_handlers() -> None:
    # Python runs signal handlers in the main thread only, and only the main thread may install them (a QGIS
    # desktop run is in a worker thread: its leftovers are swept by the next run instead).
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _CLEANUP_SIGNALS:
        current = signal.getsignal(signum)
        if current is not _remove_live_partials:
            _installed[signum] = current
            signal.signal(signum, _remove_live_partials)


def _sweep_stale_partials(folder: Path, stem: str, suffix: str) -> None:
    """Remove partial files of ``stem`` left by processes of this host that no longer exist (SIGKILL)."""
    host = socket.gethostname()
    for path in folder.glob(f".{glob.escape(stem)}.*.partial{glob.escape(suffix)}*"):
        owner = path.name[len(stem) + 2:].split(".partial")[0].rsplit("-", 2)
        if len(owner) != 3 or owner[0] != host or not owner[1].isdigit():
            continue
        try:
            os.kill(int(owner[1]), 0)
        except ProcessLookupError:
            _remove(str(path))
        except PermissionError:
            pass  # alive, owned by another user


def _partial_name(path: Path, tail: str = "") -> Path:
    owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return path.parent / f".{path.stem}.{owner}.partial{path.suffix}{tail}"


@contextlib.contextmanager
def scratch_folder(near: PathLike) -> Iterator[Path]:
    """A private folder beside the output ``near`` for intermediate files; removed on exit, on SIGTERM/SIGHUP,
    and, after SIGKILL, by the next run into that folder (the same sweep as partial files)."""
    near_path = Path(near)
    near_path.parent.mkdir(parents=True, exist_ok=True)
    _install_signal_handlers()
    _sweep_stale_partials(near_path.parent, near_path.stem, near_path.suffix)
    path = _partial_name(near_path, ".scratch")
    path.mkdir()
    _live.add(str(path))
    try:
        yield path
    finally:
        _live.discard(str(path))
        _remove(str(path))


def default_mode(path: PathLike) -> None:
    """Give ``path`` the mode a new file gets under the umask (0644 usually): temporary-file helpers (mkstemp,
    safetensors) make 0600 files, which other users' Dask workers on a shared folder could not read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension); on success rename it (and its ``.aux.xml``)
    to ``path``; on any error or SIGTERM/SIGHUP remove them, leaving no half-written file that looks complete
    and leaving an existing file at ``path`` untouched. Raises IsADirectoryError when ``path`` is empty or a folder
    (nothing could be renamed onto it).
    """
    if not str(path) or Path(path).is_dir():
        raise IsADirectoryError(f"an output must be a file, not the folder '{Path(path).absolute()}'")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _install_signal_handlers()
    _sweep_stale_partials(final.parent, final.stem, final.suffix)
    tmp = str(_partial_name(final))
    tmp_aux = tmp + AUX_SUFFIX
    _live.update((tmp, tmp_aux))
    try:
        yield tmp
        final_aux = str(final) + AUX_SUFFIX
        kill_point(f"rename {final.name}{AUX_SUFFIX}")
        if os.path.exists(tmp_aux):
            os.replace(tmp_aux, final_aux)
        elif os.path.exists(final_aux):
            os.remove(final_aux)  # a stale sidecar would relabel the new raster
        default_mode(tmp)
        kill_point(f"rename {final.name}")
        os.replace(tmp, final)
    finally:
        for leftover in (tmp, tmp_aux):
            _live.discard(leftover)
            if os.path.exists(leftover):
                os.remove(leftover)
