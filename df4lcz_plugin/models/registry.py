"""The one model registry: model cards (JSON) beside safetensors weights, listed and loaded by id or path.

A model is ``<id>.safetensors`` plus ``<id>.json``. The card says which streams the model has (``sentinel2``,
later ``vhr``), each stream's architecture and configuration, the Sentinel-2 band order and input scaling, the
classes, the fusion weight α, the source and licence, and the sha256 of the weights and of the original file.
Weight keys are prefixed by their stream (``sentinel2.…``). Nothing is ever unpickled.

Models are searched in the plugin's ``resources/lcz_models`` (shipped) and in the user folder
``$XDG_DATA_HOME/df4lcz/models`` (default ``~/.local/share/df4lcz/models``, where trained models go).
Listing reads only JSON, so it works without PyTorch.

An ensemble (``trainmodel ENSEMBLE``) is a model whose card also lists member models (``ensemble.members``: each
member's weights file relative to the card's folder, normally ``<id>.members/``, and the sha256 of its weights and
of its card). Each member is a model of its own (loadable alone). The ensemble's Sentinel-2 probabilities are the
mean of its own stream's (the final model, trained on all the training areas) and of every member's
(``backends.EnsembleRunner``); a VHR stream is the ensemble's own only. ``ensemble_members`` checks every member
against the card before it is used.
"""

import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NoReturn, TypeGuard, Union

from ..sentinel2.processing_level import LEVELS as PROCESSING_LEVELS
from ..sentinel2.bands import SO2SAT_BANDS

PathLike = Union[str, "os.PathLike[str]"]

CARD_FORMAT = "df4lcz-model-card/1"
#: A model id (the file name of a trained model): no commas, which would split a MODEL value in Processing.
MODEL_ID = r"[\w.\- ]+"
#: The streams a model may have.
STREAMS = ("sentinel2", "vhr")
#: How the VHR stream's footprint masks are made, as a card records it (``vhr.stream``): shared 320 m SAM tiles,
#: or SAM on each footprint (the paper's). Defined here, in the card's schema, so that the model room does not
#: import the VHR room above it.
SEGMENTATIONS = ("tiles", "footprint")


class ModelError(RuntimeError):
    """A model file or card is missing, corrupt, or does not fit its architecture."""


def builtin_models_dir() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "resources" / "lcz_models"


def user_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "df4lcz" / "models"


@dataclass
class ModelCard:
    """The parsed JSON card of a model, with the path of its weights."""

    path: Path
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def title(self) -> str:
        return str(self.data.get("title", self.id))

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.data["streams"])

    @property
    def weights_path(self) -> Path:
        return self.path.with_suffix(".safetensors")

    @property
    def is_ensemble(self) -> bool:
        return "ensemble" in self.data

    def stream(self, name: str) -> dict[str, Any]:
        return self.data["streams"][name]


def model_files(path: PathLike) -> list[Path]:
    """The two files of the model ``path`` names (``.json`` card, ``.safetensors`` weights)."""
    return [Path(path).with_suffix(".json"), Path(path).with_suffix(".safetensors")]


def read_card(path: PathLike) -> ModelCard:
    """Read and check a model card; ``path`` may name the ``.json`` card or the ``.safetensors`` weights.

    Raises ModelError when the card or the weights file is missing or the card is not a DF4LCZ card.
    """
    card_path = Path(path).with_suffix(".json")
    if not card_path.is_file():
        raise ModelError(f"Model card {card_path} is missing: a model is <name>.safetensors plus <name>.json.")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(f"Model card {card_path} is not valid JSON ({error}).") from None
    if not isinstance(data, dict) or data.get("format") != CARD_FORMAT or "streams" not in data:
        raise ModelError(f"{card_path} is not a DF4LCZ model card (expected format '{CARD_FORMAT}').")
    _check_card(data, card_path)
    card = ModelCard(card_path, data)
    if not card.weights_path.is_file():
        raise ModelError(f"Model weights {card.weights_path} are missing (the card {card_path} names them).")
    return card


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_card(data: dict[str, Any], card_path: Path) -> None:
    """Raise ModelError naming the first field of the card that the engine could not use."""
    def bad(field: str, what: str) -> NoReturn:
        raise ModelError(f"Model card {card_path}: '{field}' {what}. Fix the card or train the model again.")

    if not isinstance(data.get("id"), str) or not re.fullmatch(MODEL_ID, data["id"]):
        bad("id", "must be a name of letters, digits, '_', '-', '.' or spaces (it is how MODEL chooses the model)")
    streams = data["streams"]
    if not isinstance(streams, dict) or "sentinel2" not in streams:
        bad("streams", "must be an object with a 'sentinel2' stream (and optionally 'vhr'), each an object "
                       "naming its architecture")
    for name, stream in streams.items():
        if name not in STREAMS:
            bad(f"streams.{name}", f"is not a stream this plugin knows ({', '.join(STREAMS)})")
        if not isinstance(stream, dict) or not isinstance(stream.get("architecture"), str):
            bad(f"streams.{name}", "must be an object with an 'architecture' name")
        if not isinstance(stream.get("config", {}), dict):
            bad(f"streams.{name}.config", "must be an object of architecture arguments")
    _check_sentinel2(streams["sentinel2"], bad)
    if "vhr" in streams:
        _check_vhr(data, streams["vhr"], bad)
    if "ensemble" in data:
        _check_ensemble(data["ensemble"], bad)


Bad = Callable[[str, str], NoReturn]


def _check_sentinel2(sentinel2: dict[str, Any], bad: Bad) -> None:
    """Call ``bad(field, what)`` for the first field of the card's Sentinel-2 stream the engine could not use."""
    scaling = sentinel2.get("input_scaling")
    divide_by = scaling.get("divide_by") if isinstance(scaling, dict) else None
    if not _is_number(divide_by) or not divide_by > 0:
        bad("streams.sentinel2.input_scaling.divide_by", "must be a positive number (10000 for So2Sat models)")
    if sentinel2.get("bands", list(SO2SAT_BANDS)) != list(SO2SAT_BANDS):
        bad("streams.sentinel2.bands", f"must be {list(SO2SAT_BANDS)}, the band order of the Sentinel-2 stack")
    pixel = sentinel2.get("pixel_size_m", 10)
    if not _is_number(pixel) or not pixel > 0:
        bad("streams.sentinel2.pixel_size_m", "must be a positive number of metres")
    if "processing_level" in sentinel2 and sentinel2["processing_level"] not in tuple(PROCESSING_LEVELS):
        bad("streams.sentinel2.processing_level",
            f"is {json.dumps(sentinel2['processing_level'])}; it must be " + " or ".join(
                f"\"{level}\" ({what})" for level, what in PROCESSING_LEVELS.items())
            + ", the Sentinel-2 product level the model was trained on, or left out when that is unknown")


def _check_vhr(data: dict[str, Any], vhr: dict[str, Any], bad: Bad) -> None:
    """Call ``bad(field, what)`` for the first field of the card's VHR stream or fusion the engine could not use."""
    fusion = data.get("fusion")
    alpha = fusion.get("alpha") if isinstance(fusion, dict) else None
    if not _is_number(alpha) or not 0 <= alpha <= 1:
        bad("fusion.alpha", "must be a number from 0 to 1 when the model has a 'vhr' stream")
    for field in ("graph_rule", "sam"):
        if not isinstance(vhr.get(field), dict):
            bad(f"streams.vhr.{field}", "must be an object")
    if vhr["graph_rule"].get("segmentation", "footprint") not in SEGMENTATIONS:
        bad("streams.vhr.graph_rule.segmentation", f"must be one of {', '.join(SEGMENTATIONS)}")


def _check_ensemble(ensemble: object, bad: Bad) -> None:
    """Call ``bad(field, what)`` for the first field of the card's ``ensemble`` the engine could not use: each
    member a ``.safetensors`` file inside the card's folder (relative, no ``..``) with two sha256."""
    members = ensemble.get("members") if isinstance(ensemble, dict) else None
    if not isinstance(members, list) or not members:
        bad("ensemble.members", "must be a non-empty list of member models")
    for index, member in enumerate(members):
        where = f"ensemble.members[{index}]"
        model = member.get("model") if isinstance(member, dict) else None
        if not isinstance(model, str) or not model.endswith(".safetensors") or Path(model).is_absolute() \
                or ".." in Path(model).parts:
            bad(f"{where}.model", "must name a .safetensors file in the card's folder or below it (relative, no '..')")
        for key in ("weights_sha256", "card_sha256"):
            if not isinstance(member.get(key), str) or not re.fullmatch(r"[0-9a-f]{64}", member[key]):
                bad(f"{where}.{key}", "must be a sha256 (64 lower-case hex digits)")


def list_models() -> list[ModelCard]:
    """Installed models (shipped first, then the user's), as ModelCards sorted by id within each folder; of two
    models with the same id only the first is listed (MODEL chooses by id)."""
    cards: dict[str, ModelCard] = {}
    for folder in (builtin_models_dir(), user_models_dir()):
        for card_path in sorted(folder.glob("*.json")):
            try:
                card = read_card(card_path)
            except ModelError:
                continue  # a stray JSON file is not a model
            cards.setdefault(card.id, card)
    return list(cards.values())


def _architectures() -> dict[str, Any]:
    from .gcn import ObjectGCN
    from .resnet3d import ResNet11_3D
    from .sen2lcznet import Sen2LCZNet
    return {"sen2lcznet": Sen2LCZNet, "resnet11_3d": ResNet11_3D, "object_gcn": ObjectGCN}


def build_stream(stream_card: Mapping[str, Any]) -> Any:
    """An untrained torch module for a stream card (``{"architecture": ..., "config": {...}}``)."""
    architectures = _architectures()
    name = stream_card["architecture"]
    if name not in architectures:
        raise ModelError(f"Unknown architecture '{name}'; known: {sorted(architectures)}.")
    config = stream_card.get("config", {})
    accepted = set(inspect.signature(architectures[name]).parameters)
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ModelError(f"The model card gives architecture '{name}' the unknown setting(s) {', '.join(unknown)}; "
                         f"it accepts {', '.join(sorted(accepted))}.")
    try:
        return architectures[name](**config)
    except (TypeError, ValueError) as error:
        raise ModelError(f"The model card's settings for architecture '{name}' are not usable ({error}).") from None


@dataclass
class LoadedModel:
    """A model ready for inference: its card and one eval-mode torch module per stream."""

    card: ModelCard
    modules: dict[str, Any]
    #: An ensemble's member models (``ensemble_members``), loaded; empty for a single model.
    members: tuple["LoadedModel", ...] = ()

    @property
    def sentinel2(self) -> Any:
        """The model's own Sentinel-2 stream (torch module); an ensemble's members are in ``members``."""
        return self.modules["sentinel2"]


#: The Sentinel-2 stream fields every member of an ensemble must share with it (the classifier reads the patches
#: once, as the ensemble's card says).
SHARED_SENTINEL2 = ("bands", "input_scaling", "pixel_size_m", "patch_size_px")


def members_dir(path: PathLike) -> Path:
    """The folder of the member models of the ensemble ``path`` names: ``<name>.members`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.with_suffix('').name}.members")


def ensemble_entry(card_path: PathLike, member_paths: Iterable[PathLike]) -> dict[str, Any]:
    """The ``ensemble`` field of the card to be written at ``card_path``: each member model (a path naming its
    card or weights, in the card's folder or below it) by its weights file relative to that folder and the
    sha256 of its weights and its card."""
    from ..runtime.assets import sha256_of

    folder = Path(card_path).absolute().parent
    members = []
    for path in member_paths:
        card_file, weights = model_files(Path(path).absolute())
        members.append({"model": weights.relative_to(folder).as_posix(), "weights_sha256": sha256_of(weights),
                        "card_sha256": sha256_of(card_file)})
    return {"combine": "mean of the Sentinel-2 class probabilities of this model's own stream (the final model, "
                       "trained on all the training areas) and of each member's (the bootstrap models)",
            "members": members}


def ensemble_members(card: ModelCard) -> list[ModelCard]:
    """The member models of an ensemble ``card`` (empty for a single model), each checked against the card.

    Raises ModelError naming the member file that is missing, is not the one the card lists (its weights' or
    card's sha256 differs: tampered with, or replaced by another training), is itself an ensemble, or reads the
    patches otherwise than the ensemble (``SHARED_SENTINEL2``).
    """
    from ..runtime.assets import sha256_of

    cards = []
    for member in card.data.get("ensemble", {}).get("members", []):
        weights = card.path.parent / member["model"]
        files = ((weights, "weights_sha256"), (weights.with_suffix(".json"), "card_sha256"))
        missing = [path for path, _ in files if not path.is_file()]
        if missing:
            raise ModelError(f"The ensemble {card.path} lists the member model file {missing[0]}, which is missing. "
                             "Restore the model's members folder or train the ensemble again.")
        for path, key in files:
            if sha256_of(path) != member[key]:
                raise ModelError(f"The member model file {path} is not the one the ensemble {card.path} lists "
                                 "(its sha256 differs): it was changed or replaced. Train the ensemble again.")
        member_card = read_card(weights)
        if member_card.is_ensemble:
            raise ModelError(f"The member model {member_card.path} of {card.path} is itself an ensemble.")
        own, theirs = card.stream("sentinel2"), member_card.stream("sentinel2")
        if any(own.get(key) != theirs.get(key) for key in SHARED_SENTINEL2):
            raise ModelError(f"The member model {member_card.path} reads Sentinel-2 patches otherwise than the "
                             f"ensemble {card.path} ({', '.join(SHARED_SENTINEL2)} differ).")
        cards.append(member_card)
    return cards


def load_model(path: PathLike, device: Any = "cpu", members: bool = True) -> LoadedModel:
    """Load a model (card + safetensors) onto ``device`` in eval mode; an ensemble with its member models
    (``LoadedModel.members``, each checked by ``ensemble_members``) unless ``members`` is False.

    Raises ModelError when the card is missing or invalid, the weights are corrupt or truncated, are not the
    ones the card's ``weights_sha256`` names, or do not fit the architecture the card names, and for an
    ensemble's member as ``ensemble_members`` says.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..runtime.assets import sha256_of

    card = read_card(path)
    try:
        state = load_file(str(card.weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"Model weights {card.weights_path} are corrupt or truncated ({error}). "
                         "Reinstall the model or train it again.") from None
    expected = card.data.get("weights_sha256")
    if expected and sha256_of(card.weights_path) != expected:
        raise ModelError(f"Model weights {card.weights_path} are not the ones its card {card.path} was written "
                         "for (a training stopped while it replaced this model?). Train it again.")
    modules: dict[str, Any] = {}
    for stream in card.streams:
        module = build_stream(card.stream(stream))
        prefix = f"{stream}."
        sub_state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        try:
            module.load_state_dict(sub_state, strict=True)
        except RuntimeError as error:
            raise ModelError(f"Weights in {card.weights_path} do not fit the '{stream}' stream "
                             f"({card.stream(stream)['architecture']}): {error}") from None
        modules[stream] = module.to(device).eval()
    loaded = tuple(load_model(member.path, device, members=False) for member in ensemble_members(card)) \
        if members else ()
    return LoadedModel(card, modules, loaded)


def save_model(path: PathLike, card_data: Mapping[str, Any], modules: Mapping[str, Any]) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` from stream modules, each via a temporary file.

    ``modules`` maps stream name → torch module. The card gets the weights' sha256. Returns the card path.
    The weights are renamed into place before the card: a model is listed only once its card is there, and a run
    stopped between the two renames leaves a card whose sha256 does not match, which ``load_model`` refuses.
    """
    from safetensors.torch import save_file

    from ..runtime.assets import sha256_of
    from ..runtime.outputs import atomic_output

    weights, card_path = model_files(path)[::-1]
    state = {f"{stream}.{key}": value.detach().cpu().contiguous()
             for stream, module in modules.items() for key, value in module.state_dict().items()}
    with atomic_output(card_path) as tmp_card, atomic_output(weights) as tmp_weights:  # weights renamed first
        save_file(state, tmp_weights)
        card = dict(card_data, format=CARD_FORMAT, streams=card_data["streams"], weights_sha256=sha256_of(tmp_weights))
        Path(tmp_card).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card_path
