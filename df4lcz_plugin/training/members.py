"""The bootstrap models of a ``trainmodel ENSEMBLE`` run, kept as the member models of the ensemble (issue 26).

Each finished bootstrap's model (its Sentinel-2 stream only: a VHR stream stays the final model's) is written as
a model of its own, ``<model>.members/<model>.bootstrap_NNN.safetensors`` + ``.json`` (``registry.save_model``:
temporary files renamed, weights first), before the bootstrap's record is added to the ``.bootstraps.jsonl``. The
record keeps the sha256 of the member's weights, so that a resumed run keeps a bootstrap only when its member is
the one that run wrote (``usable``) and trains it again otherwise. The final model's card lists the members
(``registry.ensemble_entry``).
"""

from pathlib import Path
from typing import Any, Union

from ..models.registry import members_dir, model_files, read_card, save_model, ModelError
from ..runtime.assets import sha256_of
from .bootstrap import Record


def member_path(model_path: Union[str, Path], bootstrap: int) -> Path:
    """The weights file of the member of ``bootstrap`` (0-based) of the ensemble written at ``model_path``."""
    name = Path(model_path).with_suffix("").name
    return members_dir(model_path) / f"{name}.bootstrap_{bootstrap + 1:03d}.safetensors"


class EnsembleMembers:
    """The member models of the ensemble written at ``model_path`` (its ``.safetensors`` path).

    card: the fields every member's card shares (title, Sentinel-2 stream card, classes, licence); each member
    gets its own id, title and ``training`` (the bootstrap, its seed and best epoch).
    """

    def __init__(self, model_path: Union[str, Path], card: dict[str, Any], bootstraps: int) -> None:
        self.model_path, self.folder = Path(model_path), members_dir(model_path)
        self.stem = self.model_path.with_suffix("").name
        self.card, self.bootstraps = card, bootstraps

    def path(self, bootstrap: int) -> Path:
        """The weights file of the member of ``bootstrap`` (0-based)."""
        return member_path(self.model_path, bootstrap)

    def paths(self) -> list[Path]:
        """The weights files of all the members, in bootstrap order."""
        return [self.path(b) for b in range(self.bootstraps)]

    def save(self, bootstrap: int, module: Any, training: dict[str, Any]) -> str:
        """Write the member of ``bootstrap`` (0-based) from its Sentinel-2 stream ``module``; returns the sha256 of
        its weights, for the bootstrap's record."""
        path = self.path(bootstrap)
        card = dict(self.card, id=path.stem, training=training,
                    title=f"{self.card['title']}: bootstrap {bootstrap + 1}/{self.bootstraps}, a member of the "
                          f"ensemble {self.stem}")
        save_model(path, card, {"sentinel2": module})
        return sha256_of(path)

    def usable(self, record: Record) -> bool:
        """Whether ``record``'s member is there, as that bootstrap wrote it (its weights' sha256) with its card."""
        weights = self.path(int(record["bootstrap"]))
        if not all(part.is_file() for part in model_files(weights)):
            return False
        try:
            read_card(weights)
        except ModelError:
            return False
        return sha256_of(weights) == record.get("member_sha256")
