"""Benchmark: the levers of SAM's mask decoder on the CPU (issue 28), on real 320 m Zürich footprints
(SWISSIMAGE © swisstopo), MobileSAM, the paper's AMG settings, each against its baseline in the same run.

1. ``upscaling``: the exact fast path (``vhr.sam.MaskGenerator``) with its per-token mask upscaling
   (``sam_decoder.MaskUpscaler``, ``UPSCALING_CHUNK`` image tokens a step) against the same path with the
   library's ``output_upscaling`` modules and with the per-token network on the whole 64 × 64 grid at once; seconds
   per footprint, seconds of upscaling per footprint, and whether the masks are the same.
2. ``openvino_decoder``: the folded decoder's two stages converted to OpenVINO (its transformer layers with the IoU
   head for a batch of prompts, and the kept prompts' final attention, hypernetworks and upscaling), fp32 and
   bf16, against the same stages in PyTorch, on a real footprint's image embedding: milliseconds per call and the
   largest difference of the outputs.
3. ``bf16``: whether the CPU exposes bf16 instructions (``/proc/cpuinfo``), and PyTorch bf16 against fp32 on the
   upscaling's matrix product; the OpenVINO image encoder in bf16 against fp32.
4. ``floor``: the exact path's matrix products per footprint (PyTorch's ``FlopCounterMode``: the decoder and AMG as
   they run, the image encoder once per crop), this CPU's float32 ``torch.mm`` rate (2048³), the seconds those
   products would take at that rate, and the footprint's measured seconds: how far the path is from its floor.

Usage: ``python bench/bench_sam_decoder.py [--rounds 2] [--sections upscaling openvino_decoder bf16 floor]``.
Prints each section to stderr, then a JSON report.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_sam  # noqa: E402  (its stage timers)

#: Lower-left corners (LV95) of the real footprints: the tests' and bench_sam's.
FOOTPRINTS_X = (2679062.5, 2679180.0, 2679300.0)
FOOTPRINT_Y = 1247680.0


def _show(name, section):
    print(name, json.dumps(section), file=sys.stderr, flush=True)


def _per_call_ms(function, calls=10):
    function()
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return round((time.perf_counter() - started) / calls * 1e3, 2)


def _footprints():
    from df4lcz_plugin.runtime import assets
    from df4lcz_plugin.vhr import imagery

    source = imagery.open_vhr(assets.fetch(assets.ZURICH_ORTHO))
    wkt = source.dataset.GetProjection()
    return [imagery.read_patch(source, (x, FOOTPRINT_Y, x + 320, FOOTPRINT_Y + 320), wkt)[0] for x in FOOTPRINTS_X]


def _library_upscaling(decoder):
    """The library's ``output_upscaling`` and hypernetwork product with MaskUpscaler's signature (the baseline)."""

    def upscale(keys, hyper_in, grid, rows):
        (h, w), k = grid, len(keys)
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(k, -1, h, w))
        return (hyper_in @ upscaled.flatten(2)).view(k, hyper_in.shape[1], 4 * h, 4 * w)[rows]

    return upscale


def upscaling(model, rgbs, rounds):
    """Section 1, alternating the upscalings round by round."""
    from df4lcz_plugin.vhr import sam, sam_decoder

    generator = sam.MaskGenerator(model)
    exact = generator._generator
    per_token = exact._upscaler
    stages = bench_sam.Stages()

    def whole_grid(*args):  # per token, all 64 × 64 tokens in one step (before UPSCALING_CHUNK)
        chunk, sam_decoder.UPSCALING_CHUNK = sam_decoder.UPSCALING_CHUNK, 1 << 30
        try:
            return per_token(*args)
        finally:
            sam_decoder.UPSCALING_CHUNK = chunk

    generator.many(rgbs[:1])  # encoder compiled outside the timing
    masks = {}
    for _ in range(rounds):
        for label, upscale in (("library", _library_upscaling(model.mask_decoder)), ("whole_grid", whole_grid),
                               ("per_token", per_token)):
            exact._upscaler = upscale
            undo = stages.wrap(exact, "_upscaler", f"{label}_upscaling")
            masks[label], footprints = bench_sam._timed(lambda: generator.many(rgbs))
            stages.seconds[f"{label}_footprints"] += footprints
            undo()
    exact._upscaler = per_token
    seconds = stages.seconds
    n = rounds * len(rgbs)
    section = {f"{key}_seconds_per_footprint": round(value / n, 3) for key, value in seconds.items()}
    for part in ("footprints", "upscaling"):
        for baseline in ("library", "whole_grid"):
            ratio = seconds[f"{baseline}_{part}"] / seconds[f"per_token_{part}"]
            section[f"{part}_ratio_{baseline}_over_per_token"] = round(ratio, 3)
    section["masks_identical"] = all(np.array_equal(a.masks, b.masks) and np.array_equal(a.masks, c.masks)
                                     for a, b, c in zip(masks["library"], masks["whole_grid"], masks["per_token"]))
    return section


def _decoder_stages(model):
    """The folded decoder's two stages as modules over explicit inputs, for conversion (section 2)."""
    import torch

    from df4lcz_plugin.vhr import sam_decoder

    decoder = model.mask_decoder
    folded = sam_decoder.PromptTransformer(decoder.transformer)
    upscaler = sam_decoder.MaskUpscaler(decoder.output_upscaling)

    class Layers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = decoder  # its weights as parameters of the traced module, not constants

        def forward(self, tokens, keys, key_pe, k_image, v_image, q_image):
            folded._image = (keys, key_pe, k_image, v_image, q_image)
            queries, keys_out = folded.layers(tokens)
            iou = decoder.iou_prediction_head(folded.final(queries, keys_out, tokens, [0])[:, 0])[:, 1:]
            return queries, keys_out, iou

    class Masks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = decoder

        def forward(self, queries, keys, tokens, key_pe):
            folded._image = (keys, key_pe, None, None, None)
            mask_tokens = folded.final(queries, keys, tokens, [2, 3, 4])
            hyper_in = torch.stack([decoder.output_hypernetworks_mlps[i](mask_tokens[:, i - 1]) for i in (1, 2, 3)],
                                   dim=1)
            rows = torch.ones(hyper_in.shape[:2], dtype=torch.bool)
            return upscaler(keys, hyper_in, (64, 64), rows).view(len(keys), 3, 256, 256)

    return folded, Layers().eval(), Masks().eval()


def openvino_decoder(model, rgb, batch=4):
    """Section 2."""
    import openvino as ov
    import torch
    from segment_anything import SamPredictor

    from df4lcz_plugin.vhr import sam_decoder

    folded, layers, masks = _decoder_stages(model)
    predictor = SamPredictor(model)
    points = torch.tensor(np.random.default_rng(0).uniform(0, 1024, (batch, 1, 2)), dtype=torch.float32)
    with torch.inference_mode():
        predictor.set_image(rgb)
        sparse, dense = model.prompt_encoder(points=(points, torch.ones(batch, 1, dtype=torch.int)), boxes=None,
                                             masks=None)
        tokens = sam_decoder.prompt_tokens(model.mask_decoder, sparse)
        folded.prepare(predictor.features + dense[:1], model.prompt_encoder.get_dense_pe())
        image = folded._image
        reference_layers = layers(tokens, *image)
        reference_masks = masks(reference_layers[0], reference_layers[1], tokens, image[1])
    layer_inputs = [tokens, *image]
    mask_inputs = [reference_layers[0], reference_layers[1], tokens, image[1]]
    with torch.no_grad():
        converted = {
            "layers": ov.convert_model(layers, example_input=tuple(layer_inputs),
                                       input=[(-1, *tokens.shape[1:])] + [tuple(x.shape) for x in image]),
            "masks": ov.convert_model(masks, example_input=tuple(mask_inputs),
                                      input=[(-1, *x.shape[1:]) for x in mask_inputs[:3]] + [tuple(image[1].shape)]),
        }
    section = {"prompts_per_call": batch}
    with torch.inference_mode():
        section["pytorch_ms"] = {"layers": _per_call_ms(lambda: layers(*layer_inputs)),
                                 "masks": _per_call_ms(lambda: masks(*mask_inputs))}
    for precision in ("f32", "bf16"):
        compiled = {name: ov.Core().compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": precision})
                    for name, network in converted.items()}
        arrays = {"layers": [x.numpy() for x in layer_inputs], "masks": [x.numpy() for x in mask_inputs]}
        section[f"openvino_{precision}_ms"] = {name: _per_call_ms(lambda: compiled[name](arrays[name]))
                                               for name in compiled}
        section[f"openvino_{precision}_max_abs_difference"] = {
            "layers_keys": float(np.abs(compiled["layers"](arrays["layers"])[1] - reference_layers[1].numpy()).max()),
            "mask_logits": float(np.abs(compiled["masks"](arrays["masks"])[0] - reference_masks.numpy()).max()),
        }
    section["mean_abs_mask_logit"] = float(reference_masks.abs().mean())
    return section


def bf16(model):
    """Section 3."""
    import torch

    from df4lcz_plugin.models.backends import OpenVINORunner
    from df4lcz_plugin.vhr import sam

    flags = set(Path("/proc/cpuinfo").read_text().split()) if os.path.exists("/proc/cpuinfo") else set()
    section = {"cpu_flags_bf16": sorted(f for f in flags if "bf16" in f or f.startswith("amx"))}
    tokens = torch.randn(4 * 4096, 256)
    for dtype in (torch.float32, torch.bfloat16):
        weight, x = torch.randn(256, 256, dtype=dtype), tokens.to(dtype)
        section[f"pytorch_{dtype}_upscaling_matmul_ms"] = _per_call_ms(lambda: x @ weight)
    xml = sam._OpenVINOEncoder(model.image_encoder).xml  # this checkpoint's IR, converted when missing
    crop = np.random.default_rng(0).standard_normal((1, 3, 1024, 1024)).astype(np.float32)
    for precision in ("f32", "bf16"):
        runner = OpenVINORunner(xml, precision)
        section[f"openvino_encoder_{precision}_ms_per_crop"] = _per_call_ms(lambda: runner(crop), calls=3)
    return section


def _matmul_rate(size=2048, calls=5):
    """This CPU's float32 matrix-product rate, FLOP/s, on PyTorch's threads: a size³ ``torch.mm``."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size ** 3 / (_per_call_ms(lambda: a @ b, calls) / 1e3)


def floor(model, rgbs):
    """Section 4: the exact path against its matrix products' floor on this CPU."""
    import torch
    from segment_anything.utils.amg import generate_crop_boxes
    from torch.utils.flop_counter import FlopCounterMode

    from df4lcz_plugin.vhr import sam

    generator = sam.MaskGenerator(model)
    amg = generator._generator
    generator.many(rgbs[:1])  # encoder compiled outside the timing
    started = time.perf_counter()
    generator.many(rgbs)
    footprint = (time.perf_counter() - started) / len(rgbs)
    with torch.inference_mode():
        started = time.perf_counter()
        generator._encode(rgbs)
        encoder = (time.perf_counter() - started) / len(rgbs)
        with FlopCounterMode(display=False) as counter:  # the decoder and AMG only: embeddings are queued
            for rgb in rgbs:
                amg.generate(rgb)
        decoder_flop = counter.get_total_flops() / len(rgbs)
        with FlopCounterMode(display=False) as counter:
            model.image_encoder(torch.zeros(1, 3, 1024, 1024))
    crops = len(generate_crop_boxes(rgbs[0].shape[:2], amg.crop_n_layers, amg.crop_overlap_ratio)[0])
    encoder_flop = counter.get_total_flops() * crops
    rate = _matmul_rate()
    return {"engine": generator.engine, "crops_per_footprint": crops,
            "encoder_gflop_per_footprint": round(encoder_flop / 1e9, 1),
            "decoder_gflop_per_footprint": round(decoder_flop / 1e9, 1),
            "cpu_matmul_gflop_per_s": round(rate / 1e9, 1),
            "matmul_floor_seconds_per_footprint": round((encoder_flop + decoder_flop) / rate, 2),
            "seconds_per_footprint": round(footprint, 2), "encoder_seconds_per_footprint": round(encoder, 2),
            "encoder_gflop_per_s": round(encoder_flop / encoder / 1e9, 1),
            "decoder_and_amg_gflop_per_s": round(decoder_flop / (footprint - encoder) / 1e9, 1)}


def main():
    import torch

    from df4lcz_plugin.runtime import assets
    from df4lcz_plugin.vhr import sam

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sections", nargs="+", default=["upscaling", "openvino_decoder", "bf16", "floor"],
                        choices=["upscaling", "openvino_decoder", "bf16", "floor"])
    args = parser.parse_args()
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "torch_threads": torch.get_num_threads(),
              "load_average_at_start": os.getloadavg()}
    model = sam.load_sam(assets.fetch_member(assets.MOBILE_SAM))
    rgbs = _footprints()
    sections = {"upscaling": lambda: upscaling(model, rgbs, args.rounds),
                "openvino_decoder": lambda: openvino_decoder(model, rgbs[0]), "bf16": lambda: bf16(model),
                "floor": lambda: floor(model, rgbs)}
    for name in args.sections:
        run = sections[name]
        report[name] = run()
        _show(name, report[name])
    report["load_average_at_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
