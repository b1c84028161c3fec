"""Convert the So2Sat Sen2LCZ-Net Keras weights (HDF5, weights only) into a DF4LCZ model (safetensors + card).

Run ``python -m df4lcz_plugin.models.keras_import [OUTPUT_STEM]``; the default output is the plugin's shipped
model ``resources/lcz_models/sen2lcznet_so2sat``. Needs h5py (a build-time dependency, never loaded in QGIS).

Layer mapping. The file holds Keras 2.1.5 layers ``conv2d_1…16``, ``batch_normalization_1…16`` (creation
order = block order) and four dense heads. Keras' ``load_weights(by_name=False)``, which the So2Sat mapping
code uses, assigns weights in the file's ``layer_names`` order, which follows the inputs of the final
``Average([outputs, outputs_32, outputs_16, outputs_8])``: head on the last block, then on merge0, merge1,
merge2. The two 128-input heads (``dense_4`` and ``dense_5``) are told apart by that order only.
"""

import sys
from collections.abc import Iterable
from pathlib import Path

from typing import Any

import numpy as np
import numpy.typing as npt

from ..runtime import assets
from ..sentinel2.bands import SO2SAT_BANDS
from .registry import builtin_models_dir, save_model

SEN2LCZ_CONFIG: dict[str, Any] = {"in_bands": 10, "num_classes": 17, "width": 16, "convs_per_block": 4,
                                  "drop_rate": 0.2}


def _names(values: Iterable[bytes | str]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]


def keras_layers(h5_path: Path | str) -> list[tuple[str, list[npt.NDArray[Any]]]]:
    """Weight-bearing layers of a Keras weights file as ``[(layer_name, [arrays…]), …]`` in file order."""
    import h5py

    layers: list[tuple[str, list[npt.NDArray[Any]]]] = []
    with h5py.File(h5_path, "r") as f:
        for name in _names(f.attrs["layer_names"]):
            group = f[name]
            weights = [np.asarray(group[w]) for w in _names(group.attrs["weight_names"])]
            if weights:
                layers.append((name, weights))
    return layers


def sen2lcz_state_dict(h5_path: Path | str) -> dict[str, npt.NDArray[Any]]:
    """The Sen2LCZNet state dict (numpy float32 arrays) converted from the Keras HDF5 file.

    Conv kernels (kh, kw, in, out) → (out, in, kh, kw); dense kernels (in, out) → (out, in).
    Raises ValueError if the file does not hold 16 conv, 16 BN and 4 dense layers.
    """
    layers = keras_layers(h5_path)

    def of_kind(prefix: str) -> list[tuple[str, list[npt.NDArray[Any]]]]:
        found = [(n, w) for n, w in layers if n.rsplit("_", 1)[0] == prefix]
        return sorted(found, key=lambda item: int(item[0].rsplit("_", 1)[1]))

    convs, norms = of_kind("conv2d"), of_kind("batch_normalization")
    dense = [(n, w) for n, w in layers if n.startswith("dense")]  # file order, see module docstring
    if (len(convs), len(norms), len(dense)) != (16, 16, 4):
        raise ValueError(f"{h5_path}: expected 16 conv2d, 16 batch_normalization and 4 dense layers, "
                         f"found {len(convs)}, {len(norms)}, {len(dense)}")
    state: dict[str, npt.NDArray[Any]] = {}
    for index, ((_, (kernel, bias)), (_, (gamma, beta, mean, var))) in enumerate(zip(convs, norms)):
        prefix = f"blocks.{index // 4}.{index % 4}"
        state[f"{prefix}.0.weight"] = kernel.transpose(3, 2, 0, 1)
        state[f"{prefix}.0.bias"] = bias
        state[f"{prefix}.1.weight"], state[f"{prefix}.1.bias"] = gamma, beta
        state[f"{prefix}.1.running_mean"], state[f"{prefix}.1.running_var"] = mean, var
        state[f"{prefix}.1.num_batches_tracked"] = np.array(0, dtype=np.int64)
    final, level0, level1, level2 = dense
    for head, (_, (kernel, bias)) in enumerate((level0, level1, level2, final)):
        state[f"heads.{head}.weight"], state[f"heads.{head}.bias"] = kernel.T, bias
    return {k: np.ascontiguousarray(v, dtype=np.int64 if v.dtype == np.int64 else np.float32)
            for k, v in state.items()}


def sen2lcz_card() -> dict[str, Any]:
    """The model card of the converted So2Sat Sen2LCZ-Net."""
    return {
        "id": "sen2lcznet_so2sat",
        "title": "Sen2LCZ-Net, So2Sat LCZ42 pretrained (Qiu et al. 2020)",
        "streams": {
            "sentinel2": {
                "architecture": "sen2lcznet",
                "config": SEN2LCZ_CONFIG,
                "bands": list(SO2SAT_BANDS),
                "patch_size_px": 32,
                "pixel_size_m": 10,
                "input_scaling": {
                    "divide_by": 10000.0,
                    "description": "Level-1C/2A digital numbers on the 0–10000 reflectance scale (offset removed),"
                                   " divided by 10000, as img2map/img2lczMap_oneCity.py applies it (scale 10000.0)",
                },
                "nodata_rule": "a patch with any pixel equal to 0 (no data) in any band is not classified",
                # So2Sat LCZ42's Sentinel-2 patches are Level-1C (top-of-atmosphere) composites.
                "processing_level": "L1C",
            },
        },
        "fusion": None,
        "classes": list(range(1, 18)),
        "source": {
            "paper": "Qiu C., Tong X., Schmitt M., Bechtel B., Zhu X.X. (2020), Multilevel feature fusion-based CNN "
                     "for local climate zone classification from Sentinel-2 images: benchmark results on the "
                     "So2Sat LCZ42 dataset. IEEE JSTARS 13:2793-2806",
            "code": "https://github.com/ChunpingQiu/benchmark-on-So2SatLCZ42-dataset-a-simple-tour "
                    "(model.py sen2LCZ_drop(depth=17, dropRate=0.2, fusion=1))",
            "weights": assets.SEN2LCZ_KERAS.urls[0],
            "training_data": "So2Sat LCZ42 (Zhu et al. 2020), Sentinel-2 Level-1C patches of 42 cities",
        },
        "licence": "MIT",
        "source_sha256": assets.SEN2LCZ_KERAS.sha256,
        "parameters": 793348,
    }


def convert(output_stem: Path | str | None = None) -> Path:
    """Convert the So2Sat Keras weights (fetched by the asset loader) into ``<output_stem>.{safetensors,json}``."""
    import torch

    from .sen2lcznet import Sen2LCZNet

    output_stem = Path(output_stem) if output_stem else builtin_models_dir() / "sen2lcznet_so2sat"
    model = Sen2LCZNet(**SEN2LCZ_CONFIG)
    state = {k: torch.from_numpy(v) for k, v in sen2lcz_state_dict(assets.fetch(assets.SEN2LCZ_KERAS)).items()}
    model.load_state_dict(state, strict=True)
    return save_model(output_stem, sen2lcz_card(), {"sentinel2": model})


if __name__ == "__main__":
    print(convert(sys.argv[1] if len(sys.argv) > 1 else None))
