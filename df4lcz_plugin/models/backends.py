"""Inference back-ends of the Sentinel-2 stream: OpenVINO on CPU, PyTorch on CUDA (or on CPU when asked).

A runner maps a batch of patches, float32 (B, 10, 32, 32) scaled as the model card says, to class probabilities
float32 (B, 17). ``sentinel2_runner`` picks and builds one:

- ``auto``: OpenVINO on CPU when ``openvino`` is installed, PyTorch on CUDA or without OpenVINO.
- ``openvino``: the network is converted from the model's own PyTorch module (``openvino.convert_model``) once,
  stored beside the model as ``<model>.openvino-<first 16 hex of the weights' sha256>.xml/.bin`` (or in the
  user's cache when the model's folder is read-only), and compiled for the CPU. fp32 weights are kept (OpenVINO
  would otherwise compress them to fp16) and fp32 inference is forced (on CPUs with bf16 OpenVINO defaults to
  it): max |Δp| against PyTorch 4.8e-6 on real patches. ``precision="bf16"`` is opt-in.
- ``pytorch``: BatchNorm folded into the convolutions, channels-last.

An ensemble (``registry.ensemble_members``) gets one runner of the chosen back-end per model, its own stream's
first, and ``EnsembleRunner`` averages their probabilities; TTA wraps the ensemble (each member sees the 8 views).

Threads, measured on the 2-core development machine (bench/bench_sentinel2.py, patches/s, idle / with one core
busy elsewhere): OpenVINO 1 thread 2,115 / 2,259, 2 threads 4,156 / 2,220; PyTorch 1 thread 1,827 / 1,878,
2 threads 3,666 / 901. OpenVINO's scheduler uses every core when idle and degrades gracefully under load, so it
gets all cores (``OPENVINO_THREADS`` 0: its own choice). PyTorch with 2 threads falls to half of 1 thread as soon
as another process competes, which a QGIS desktop always has, so it gets ``TORCH_CPU_THREADS`` = 1.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .registry import LoadedModel, ModelCard

#: A runner: patches float32 (B, 10, 32, 32) → class probabilities float32 (B, 17).
Runner = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]

BACKENDS = ("auto", "openvino", "pytorch")
PRECISIONS = ("f32", "bf16")
#: Threads of CPU inference (module docstring): 0 lets OpenVINO use every core.
OPENVINO_THREADS = 0
TORCH_CPU_THREADS = 1


class BackendError(RuntimeError):
    """The requested back-end cannot run here."""


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def converted_path(card: "ModelCard") -> Path:
    """Where the OpenVINO form of ``card``'s Sentinel-2 stream lives (beside the model, keyed by its weights)."""
    from ..runtime.assets import cache_dir, sha256_of

    sha = card.data.get("weights_sha256") or sha256_of(card.weights_path)
    name = f"{card.path.stem}.openvino-{sha[:16]}.xml"
    beside = card.path.with_name(name)
    if beside.exists() or os.access(card.path.parent, os.W_OK):
        return beside
    return cache_dir() / "openvino" / name


def convert(module: Any, xml_path: Union[str, Path], input_shape: Sequence[int] = (-1, 10, 32, 32)) -> Path:
    """Convert a PyTorch module to OpenVINO IR at ``xml_path`` (+ ``.bin``), fp32 weights; ``input_shape``
    (float32, -1 a dynamic dimension) defaults to a Sentinel-2 stream's (B, 10, 32, 32).

    Written under temporary names and renamed, so a half-written model is never picked up.
    """
    import warnings

    import openvino as ov
    import torch

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = xml_path.with_name(f".{xml_path.stem}.{os.getpid()}.partial.xml")
    example = torch.zeros([1 if size == -1 else size for size in input_shape])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape asserts traced as constants
        network = ov.convert_model(module.eval(), example_input=example, input=[tuple(input_shape)])
    try:
        ov.save_model(network, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(tmp, xml_path)
    finally:
        for leftover in (tmp, tmp.with_suffix(".bin")):
            if leftover.exists():
                leftover.unlink()
    return xml_path


class OpenVINORunner:
    """Compiled OpenVINO model on the CPU; ``precision`` f32 (default) or bf16."""

    def __init__(self, xml_path: Union[str, Path], precision: str = "f32", threads: int = OPENVINO_THREADS) -> None:
        import openvino as ov

        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
        self.compiled = ov.Core().compile_model(str(xml_path), "CPU", config)

    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(self.compiled(np.ascontiguousarray(batch, dtype=np.float32))[0], dtype=np.float32)


class TorchRunner:
    """A PyTorch Sentinel-2 stream with BatchNorm folded in, channels-last, on ``device``. ``threads``: PyTorch's
    CPU threads while this runner runs (restored after each call), so that the other stream's PyTorch work (SAM) in
    the same process keeps its own; None leaves them as they are (CUDA)."""

    def __init__(self, module: Any, device: Any, threads: Optional[int] = None) -> None:
        import torch

        from .inference import fuse_conv_bn

        self.device = device
        self.threads = threads
        # channels_last lets oneDNN pick its faster convolution kernels on CPU (measured in bench/).
        is_3d = any(isinstance(m, torch.nn.Conv3d) for m in module.modules())
        self.memory_format = torch.channels_last_3d if is_3d else torch.channels_last
        self.module = fuse_conv_bn(module).to(device, memory_format=self.memory_format)

    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import torch

        tensor = torch.from_numpy(batch).to(self.device)
        if tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        others = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return np.asarray(self.module(tensor).float().cpu().numpy(), dtype=np.float32)
        finally:
            torch.set_num_threads(others)


class TTARunner:
    """Test-time augmentation: ``runner``'s class probabilities of each patch averaged over the 8 symmetries of the
    square (4 quarter turns, each also mirrored: the dihedral group D4), run as one batch of 8 × B patches. LCZ do
    not depend on a patch's orientation, so the average removes the network's own orientation bias; it costs 8×.
    float32 (B, 10, 32, 32) → float32 (B, 17)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        views = [np.rot90(flipped, k, axes=(2, 3)) for flipped in (batch, batch[..., ::-1]) for k in range(4)]
        probabilities = self.runner(np.ascontiguousarray(np.concatenate(views), dtype=np.float32))
        return np.asarray(probabilities.reshape(len(views), len(batch), -1).mean(axis=0), dtype=np.float32)


class EnsembleRunner:
    """An ensemble: the mean of the class probabilities of its members' runners (bagging; the LCZ Generator's
    bootstrap models as members, issue 26). float32 (B, 10, 32, 32) → float32 (B, 17); costs the sum of the
    members' inference."""

    def __init__(self, runners: Sequence[Runner]) -> None:
        self.runners = list(runners)

    def __call__(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        total = self.runners[0](batch).astype(np.float64)
        for runner in self.runners[1:]:
            total += runner(batch)
        return (total / len(self.runners)).astype(np.float32)


def sentinel2_runner(model: Union["ModelCard", "LoadedModel"], backend: str = "auto", device: Any = "cpu",
                     precision: str = "f32", threads: Optional[int] = None,
                     tta: bool = False) -> tuple[Runner, str]:
    """(runner, description) for the Sentinel-2 stream of ``model`` (a registry ModelCard or LoadedModel).

    threads: CPU inference threads (a Dask worker's share of its machine's cores); None or 0: the measured
    defaults, ``OPENVINO_THREADS`` and ``TORCH_CPU_THREADS``. tta: wrap it in ``TTARunner`` (8× the cost).
    An ensemble: an ``EnsembleRunner`` of its own stream's runner and each member's, all of the same back-end and
    precision (a ModelCard's members checked by ``registry.ensemble_members``, a LoadedModel's when loaded).

    A ModelCard with its OpenVINO form already built needs no PyTorch. Raises BackendError when the back-end
    cannot run (OpenVINO not installed, OpenVINO asked for on CUDA, bf16 with PyTorch), ModelError for an
    ensemble's missing or changed member.
    """
    from .registry import LoadedModel, ensemble_members

    card = model.card if isinstance(model, LoadedModel) else model
    on_cuda = str(device).startswith("cuda")
    if backend not in BACKENDS:
        raise BackendError(f"BACKEND '{backend}' is not one of {', '.join(BACKENDS)}.")
    if precision not in PRECISIONS:
        raise BackendError(f"PRECISION '{precision}' is not one of {', '.join(PRECISIONS)}.")
    if backend == "auto":
        backend = "openvino" if not on_cuda and openvino_available() else "pytorch"
    members = list(model.members) if isinstance(model, LoadedModel) else ensemble_members(card)
    built = [_stream_runner(one, backend, device, precision, threads) for one in [model, *members]]
    runner, engine = built[0]
    if members:
        runner, engine = EnsembleRunner([one for one, _ in built]), f"{engine}, ensemble of {len(built)} models"
    return (TTARunner(runner), f"{engine}, test-time augmentation ×8") if tta else (runner, engine)


def _stream_runner(model: Union["ModelCard", "LoadedModel"], backend: str, device: Any, precision: str,
                   threads: Optional[int]) -> tuple[Runner, str]:
    """(runner, description) of one model's own Sentinel-2 stream on ``backend`` (openvino or pytorch)."""
    from .registry import LoadedModel

    card = model.card if isinstance(model, LoadedModel) else model
    on_cuda = str(device).startswith("cuda")
    if backend == "openvino":
        if on_cuda:
            raise BackendError("BACKEND=openvino runs on the CPU; use DEVICE=cpu, or BACKEND=pytorch for the GPU.")
        if not openvino_available():
            raise BackendError("BACKEND=openvino was requested but the 'openvino' package is not installed; install "
                               "the plugin's dependencies, or use BACKEND=pytorch.")
        xml = converted_path(card)
        if not xml.exists() and isinstance(model, LoadedModel):
            convert(model.sentinel2, xml)
        elif not xml.exists():
            ensure_converted(card.path)
        return OpenVINORunner(xml, precision, threads or OPENVINO_THREADS), f"openvino {precision} on cpu"
    return _torch_runner(model, card, device, precision, threads)


def _torch_runner(model: Union["ModelCard", "LoadedModel"], card: "ModelCard", device: Any, precision: str,
                  threads: Optional[int]) -> tuple[Runner, str]:
    """(TorchRunner, description) of ``sentinel2_runner``'s PyTorch back-end."""
    from .registry import LoadedModel, load_model

    if precision != "f32":
        raise BackendError("PRECISION=bf16 is offered with BACKEND=openvino only.")
    # Threads are the runner's own, set around its calls only: the process's (SAM's) are left alone.
    own_threads = None if str(device).startswith("cuda") else (threads or TORCH_CPU_THREADS)
    loaded = model if isinstance(model, LoadedModel) else load_model(card.path, device, members=False)
    return TorchRunner(loaded.sentinel2, device, own_threads), f"pytorch on {device}"


def ensure_converted(card_path: Union[str, Path]) -> Path:
    """Build the OpenVINO form of a model's Sentinel-2 stream if it is missing (setup does this for the shipped
    model, so that the plugin zip carries it); returns its path."""
    from .registry import load_model, read_card

    card = read_card(card_path)
    xml = converted_path(card)
    if not xml.exists():
        convert(load_model(card.path, "cpu", members=False).sentinel2, xml)
    return xml


if __name__ == "__main__":
    import sys

    print(ensure_converted(sys.argv[1]))
