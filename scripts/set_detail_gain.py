"""Give trained 2D fusion weights the detail layer (network.FusionConfig.detail_gain): the
same tensors, the config's gain set, and a manifest entry that keeps the source's own.

    python scripts/set_detail_gain.py --gain 1 --output runs/fusion2d-detail/fusion2d.safetensors

The detail layer has no parameters: it adds the sources' finest detail to the network's output
with gain ``detail_gain`` times the emphasis, so no training is needed, only this record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ClinicalFMambaLib.fusion import BUNDLED_MODELS
from ClinicalFMambaLib.network import FusionConfig, FusionNet
from ClinicalFMambaLib.weights import (WeightsError, bundled, load_weights, manifest_entry,
                                       save_weights, sha256_of)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=bundled(BUNDLED_MODELS[2]),
                        help="2D weights with the emphasis conditioning (default: bundled)")
    parser.add_argument("--gain", type=float, required=True, help="detail_gain, at least 0")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if not args.gain >= 0:
        sys.exit(f"set_detail_gain: --gain must be at least 0, got {args.gain}")
    if args.output.resolve() == args.weights.resolve():
        sys.exit("set_detail_gain: --output must differ from --weights")
    try:
        state, config = load_weights(args.weights)
        config = {**config, "detail_gain": args.gain}
        FusionNet(FusionConfig.from_dict(config)).load_state_dict(state)  # checks both
    except (WeightsError, ValueError) as error:
        sys.exit(f"set_detail_gain: {error}")
    save_weights(state, args.output, config, {
        "command": "python scripts/set_detail_gain.py " + " ".join(sys.argv[1:]),
        "detail_gain": args.gain,
        "source": {"path": str(args.weights), "sha256": sha256_of(args.weights),
                   "manifest_entry": manifest_entry(args.weights)}})
    print(f"wrote {args.output} (detail_gain {args.gain:g})")


if __name__ == "__main__":
    main()
