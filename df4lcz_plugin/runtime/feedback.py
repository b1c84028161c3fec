"""Progress, cancel and messages between the engine and its caller (a QGIS algorithm, a script, a test)."""

import time
from dataclasses import dataclass

from .kill_points import kill_point


class Canceled(RuntimeError):
    """The caller asked to stop; whatever was being written has been removed."""


@dataclass(frozen=True)
class TileStatus:
    """A tile has finished: the ``done``-th of ``tiles``, holding ``cells`` output cells; ``cells_done`` of the
    run's ``cells_total`` are done, at ``rate`` cells/s (measured on the tiles computed in this run: resumed ones
    do not count)."""

    done: int
    tiles: int
    cells: int
    cells_done: int
    cells_total: int
    rate: float

    def line(self) -> str:
        """One line for a log, e.g. 'Tile 3/12: 4,096 cells, 850 cells/s, about 12 s left'."""
        left = (self.cells_total - self.cells_done) / self.rate if self.rate > 0 else 0.0
        return (f"Tile {self.done}/{self.tiles}: {self.cells:,} cells, {self.rate:,.0f} cells/s, about "
                f"{duration_text(left)} left")


def duration_text(seconds: float) -> str:
    """A duration for a log: '40 s', '12 min' or '2.5 h'."""
    return (f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400
            else f"{seconds / 3600:.1f} h")


class Feedback:
    """No-op feedback for scripts. The QGIS algorithms pass an adapter around ``QgsProcessingFeedback``."""

    def progress(self, fraction: float) -> None:
        """Report progress as a fraction 0–1."""

    def canceled(self) -> bool:
        return False

    def info(self, text: str) -> None:
        """An informational message."""

    def warning(self, text: str) -> None:
        """A warning the user should see."""

    def tile_done(self, status: TileStatus) -> None:
        """A tile has finished (a ``TileStatus``); by default one ``info`` line with cells/s and the time left."""
        self.info(status.line())

    def check_canceled(self) -> None:
        """Raise Canceled if the caller asked to stop."""
        if self.canceled():
            raise Canceled("Canceled by the user; no output was written.")


class StageFeedback(Feedback):
    """Feedback of stage ``index`` (0-based) of ``stages`` equal stages of a run: its progress maps into the
    run's [index / stages, (index + 1) / stages], its messages get ``prefix``, and cancel is the run's."""

    def __init__(self, run: Feedback, index: int, stages: int, prefix: str = "") -> None:
        self.run, self.index, self.stages, self.prefix = run, index, stages, prefix

    def progress(self, fraction: float) -> None:
        self.run.progress((self.index + fraction) / self.stages)

    def canceled(self) -> bool:
        return self.run.canceled()

    def info(self, text: str) -> None:
        self.run.info(self.prefix + text)

    def warning(self, text: str) -> None:
        self.run.warning(self.prefix + text)


class TileClock:
    """Counts finished tiles of a run of ``tiles`` tiles and ``cells`` cells and reports each to ``feedback``
    (``tile_done`` and ``progress``). ``resumed_tiles``/``resumed_cells``: already done before this run."""

    def __init__(self, feedback: Feedback, tiles: int, cells: int, resumed_tiles: int = 0,
                 resumed_cells: int = 0) -> None:
        self.feedback, self.tiles, self.cells = feedback, tiles, cells
        self.done, self.cells_done = resumed_tiles, resumed_cells
        self.computed = 0
        self.started = time.perf_counter()

    def tile_done(self, cells: int) -> None:
        """Count a finished tile of ``cells`` cells and report it."""
        self.done += 1
        self.cells_done += cells
        self.computed += cells
        rate = self.computed / max(time.perf_counter() - self.started, 1e-9)
        self.feedback.progress(self.cells_done / self.cells)
        self.feedback.tile_done(TileStatus(self.done, self.tiles, cells, self.cells_done, self.cells, rate))
        kill_point("tile")
