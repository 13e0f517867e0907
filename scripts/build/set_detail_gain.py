"""Give trained fusion weights the detail layer (networks.fusion_net.FusionConfig.detail_gain and
detail_shrink): the same tensors, the config's gain and shrinkage set, and a manifest entry
that keeps the source's own.

    python scripts/build/set_detail_gain.py --gain 1 --output runs/fusion2d-detail/fusion2d.safetensors
    python scripts/build/set_detail_gain.py --dim 3 --gain 0.4 --shrink 2.5 \
        --output runs/fusion3d-detail/fusion3d.safetensors

The detail layer has no parameters: it adds the sources' finest detail (soft-thresholded at
``detail_shrink`` noise scales) to the network's output with gain ``detail_gain`` (times the
emphasis for a network conditioned on one), so no training is needed, only this record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ClinicalFMambaLib.fusion.inference import BUNDLED_MODELS
from ClinicalFMambaLib.io.weights import (WeightsError, bundled, load_weights, manifest_entry,
                                          save_weights, sha256_of)
from ClinicalFMambaLib.networks.fusion_net import FusionConfig, FusionNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2)
    parser.add_argument("--weights", type=Path, default=None,
                        help="fusion weights (default: the bundled model of --dim)")
    parser.add_argument("--gain", type=float, required=True, help="detail_gain, at least 0")
    parser.add_argument("--shrink", type=float, default=0.0,
                        help="detail_shrink, at least 0 (default 0: no shrinkage)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    args.weights = args.weights or bundled(BUNDLED_MODELS[args.dim])
    if not (args.gain >= 0 and args.shrink >= 0):
        sys.exit(f"set_detail_gain: --gain and --shrink must be at least 0, got {args.gain} "
                 f"and {args.shrink}")
    if args.output.resolve() == args.weights.resolve():
        sys.exit("set_detail_gain: --output must differ from --weights")
    try:
        state, config = load_weights(args.weights)
        config = {**config, "detail_gain": args.gain, "detail_shrink": args.shrink}
        if config.get("spatial_dims", 2) != args.dim:
            raise ValueError(f"{args.weights} holds {config.get('spatial_dims', 2)}D weights, "
                             f"not {args.dim}D (--dim)")
        FusionNet(FusionConfig.from_dict(config)).load_state_dict(state)  # checks both
    except (WeightsError, ValueError) as error:
        sys.exit(f"set_detail_gain: {error}")
    save_weights(state, args.output, config, {
        "command": "python scripts/build/set_detail_gain.py " + " ".join(sys.argv[1:]),
        "detail_gain": args.gain,
        "detail_shrink": args.shrink,
        "source": {"path": str(args.weights), "sha256": sha256_of(args.weights),
                   "manifest_entry": manifest_entry(args.weights)}})
    print(f"wrote {args.output} (detail_gain {args.gain:g}, detail_shrink {args.shrink:g})")


if __name__ == "__main__":
    main()
