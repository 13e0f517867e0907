"""The ``evaluate`` and ``demo`` commands."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from statistics import fmean

from .fuse_commands import add_model_options, model_loader, report_unmatched


def _json_value(value: float) -> float | None:
    return value if math.isfinite(value) else None  # PSNR of identical images is inf


def _table(rows: dict[str, dict[str, float]], first: str) -> str:
    """Fixed-width text table: one row per key of ``rows``, one column per metric."""
    keys = list(next(iter(rows.values())))
    width = max(len(first), *map(len, rows))
    lines = [f"{first:<{width}} " + " ".join(f"{k:>10}" for k in keys)]
    lines += [f"{name:<{width}} " + " ".join(f"{v[k]:10.4f}" for k in keys)
              for name, v in rows.items()]
    return "\n".join(lines)


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: fmean(row[key] for row in rows) for key in rows[0]}


def _evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.image_scores import MODEL_NAME, evaluate_batch
    from ..fusion.image_files import match_inputs

    batch = match_inputs(args.a, args.b, args.fused)
    report_unmatched(batch)
    results = evaluate_batch(batch)
    if args.json:
        for path, methods in results:
            finite = {method: {k: _json_value(v) for k, v in metrics.items()}
                      for method, metrics in methods.items()}
            print(json.dumps({"fused": str(path), **finite.pop(MODEL_NAME), "baselines": finite}))
        return 0
    rows = {path.name: methods[MODEL_NAME] for path, methods in results}
    if len(rows) > 1:
        rows["average"] = _mean_rows(list(rows.values()))  # "mean" names a baseline below
    print(_table(rows, "fused"))
    means = {method: _mean_rows([methods[method] for _, methods in results])
             for method in results[0][1]}
    print(f"\naverage over {len(results)} pair(s): the fused images and the classical "
          f"baselines on the same pairs (higher is better)\n{_table(means, 'method')}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..evaluation.demo import run_demo, run_volume_demo
    from ..evaluation.metrics import METRIC_NAMES
    from ..fusion.volumes import load_volume_model
    from ..io.files import check_output_location, write_atomically

    check_output_location(args.output, folder=True)
    results = run_demo(model_loader(args)(), args.output)
    for name, methods in results.items():
        ten = {method: {k: metrics[k] for k in METRIC_NAMES} for method, metrics in methods.items()}
        print(f"\n{name} (8-bit protocol, higher is better)\n{_table(ten, 'method')}")
    model = load_volume_model("auto", args.device)
    volume = run_volume_demo(model, args.output)
    print(f"\nvolume T2 + FLAIR, {model.cfg.spatial_dims}D model (whole volume, higher is "
          f"better)\n{_table(volume, 'method')}")
    tables = {**results, f"volume_{model.cfg.spatial_dims}d": volume}
    metrics = {name: {method: {k: _json_value(v) for k, v in values.items()}
                      for method, values in methods.items()} for name, methods in tables.items()}
    write_atomically(args.output / "metrics.json",
                     lambda target: target.write_text(json.dumps(metrics, indent=1)))
    print(f"\nwrote fused images, side-by-side views, the fused volume and its axial/coronal/"
          f"sagittal views, and these metrics (metrics.json) to {args.output}")
    return 0


def register(commands) -> None:
    """Add the evaluate and demo sub-commands."""
    evaluate = commands.add_parser(
        "evaluate", help="fusion quality metrics of fused images",
        description="The ten 8-bit-protocol metrics (EN SD SF AG MI SCD VIF Qabf SSIM PSNR) "
                    "and the paper's SSIM/PSNR (paper_*) of FUSED against A and B; files, or "
                    "folders matched by file name. A colour source and a colour fused image "
                    "are measured by their luma (Y of YCbCr).")
    evaluate.add_argument("a", metavar="A", type=Path, help="first source image or folder")
    evaluate.add_argument("b", metavar="B", type=Path, help="second source image or folder")
    evaluate.add_argument("fused", metavar="FUSED", type=Path, help="fused image or folder")
    evaluate.add_argument("--json", action="store_true",
                          help="one JSON record per image (non-finite values as null)")
    evaluate.set_defaults(func=_evaluate)

    demo = commands.add_parser(
        "demo", help="fuse the bundled sample pairs and compare with classical baselines",
        description="Fuse the bundled MRI-CT and MRI-SPECT pairs (Resources/sample), write "
                    "each fused image and an A | B | fused PNG, and print the metrics of the "
                    "network and of the mean, max and Laplacian-pyramid baselines.")
    demo.add_argument("-o", "--output", metavar="OUTDIR", type=Path, default=Path("out/demo"),
                      help="output folder (default: %(default)s)")
    add_model_options(demo)
    demo.set_defaults(func=_demo)
