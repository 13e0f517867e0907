"""Rank the bundled 2D model among the classical baselines and published fusion methods.

    python scripts/research/rank_table.py [--markdown] [--threads 1] [--pair-type CT-MRI] [--limit N]
        [--weights PATH] [--emphasis E ...] [--per-case] [--quality best [--refine-steps N]]

Every validation pair (whole held-back Harvard cases, training.harvard_data.VALIDATION_CASES) is fused
by the model and the mean / max / Laplacian-pyramid baselines and scored, with the published
methods' fused images of the same pairs (``--peers``: <method>/<pair type>/<file name>.png;
colour results on their luma Y, as the model's), exactly as scripts/research/fusion_results.py scores
(its ``score``): the ten metrics of the 8-bit protocol, averaged per pair type. Printed per
pair type: each method's metric means, its mean rank over the ten metrics among all methods
(metrics.mean_ranks: 1 = best in each metric's direction, equal means share the mean of their
ranks) and the number of metrics on which ClinicalFMamba is strictly better than it
(metrics.metric_wins: a tie is no win). With ``--emphasis`` (repeatable; a network trained with
an emphasis) the model is scored at each value, each against the same others, and a last table
lists ours at every value: its metrics, mean rank and fewest wins per pair type, and the mean
rank over the pair types (the default emphasis is the value where that is lowest). With
``--per-case`` every held-back case is ranked on its own (held-back cases of other scanners
and patients are what a result has to carry to; the means over a pair type can hide a case
that falls short). With ``--quality best`` the model's images are refined as ``clinicalfmamba
fuse --quality best`` does (fusion/refine.py; ``--refine-steps``: its steps) before scoring.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from fusion_results import METHODS, emphasis_name, score

from ClinicalFMambaLib.evaluation.metrics import METRIC_NAMES
from ClinicalFMambaLib.evaluation.ranking import is_better, mean_ranks, metric_wins
from ClinicalFMambaLib.fusion.inference import load_fusion_model, parse_emphasis, set_emphasis
from ClinicalFMambaLib.fusion.refine import RefineSettings, parse_quality
from ClinicalFMambaLib.io.weights import WeightsError
from ClinicalFMambaLib.training.harvard_data import (PAIR_TYPES, HarvardPair, find_pairs, load_luma,
                                                     split_by_case)

OURS = "ClinicalFMamba"


def peer_methods(peers: Path, pair_type: str) -> list[str]:
    """The published methods with results for ``pair_type`` (EMFusion has CT-MRI only)."""
    return sorted(d.name for d in peers.iterdir() if (d / pair_type).is_dir())


def peer_image_paths(peers: Path, pairs: list[HarvardPair]) -> dict[str, dict[str, Path]]:
    """{pair name: {method: fused image}}; every method with a folder for a pair type must
    have every pair of that type, or the means would not compare like with like."""
    paths = {}
    for pair in pairs:
        paths[pair.name] = {m: peers / m / pair.pair_type / pair.mri.name
                            for m in peer_methods(peers, pair.pair_type)}
        for method, path in paths[pair.name].items():
            if not path.is_file():
                raise FileNotFoundError(f"{method} has no fused image for {pair.name}: {path}")
    return paths


def rank_rows(methods: dict[str, dict[str, float]]) -> list[tuple[str, float, int | None]]:
    """(method, mean rank, metrics ClinicalFMamba wins against it) in table order: ours and
    the baselines first, then the published methods by name."""
    ranks = mean_ranks(methods)
    order = [m for m in METHODS if m in methods] + sorted(set(methods) - set(METHODS))
    return [(m, ranks[m], None if m == OURS else len(metric_wins(methods[OURS], methods[m])))
            for m in order]


def summary(methods: dict[str, dict[str, float]]) -> str:
    rows = rank_rows(methods)
    ranks = {m: r for m, r, _ in rows}
    best = min(ranks.values())
    fewest = min(w for _, _, w in rows if w is not None)
    return (f"best mean rank: {', '.join(m for m, r in ranks.items() if r == best)} "
            f"({best:.2f}); {OURS}: {ranks[OURS]:.2f}, place "
            f"{1 + sum(r < ranks[OURS] for r in ranks.values())} of {len(ranks)}; fewest wins "
            f"of {OURS}: {fewest}/{len(METRIC_NAMES)} vs "
            f"{', '.join(m for m, _, w in rows if w == fewest)}")


def render(results: dict, counts: dict[str, int], markdown: bool) -> str:
    columns = [*METRIC_NAMES, "mean rank", f"{OURS} wins"]
    lines = []
    for pair_type, methods in sorted(results.items()):
        rows = rank_rows(methods)
        best_rank = min(r for _, r, _ in rows)
        table = []
        for method, rank, wins in rows:
            cells = []
            for metric in METRIC_NAMES:
                value = methods[method][metric]
                best = not any(is_better(metric, v[metric], value) for v in methods.values())
                cells.append(f"**{value:.3f}**" if markdown and best else f"{value:.3f}")
            cells.append(f"**{rank:.2f}**" if markdown and rank == best_rank else f"{rank:.2f}")
            cells.append("—" if wins is None else f"{wins}/{len(METRIC_NAMES)}")
            table.append([method, *cells])
        n = counts[pair_type]
        title = f"{pair_type} ({n} validation pair{'' if n == 1 else 's'})"
        if markdown:
            lines += [f"### {title}", "", "| method | " + " | ".join(columns) + " |",
                      "|---" * (len(columns) + 1) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in table]
        else:
            header = ["method", *columns]
            widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
            lines += [title] + ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                                          for i, (cell, w) in enumerate(zip(row, widths)))
                                for row in [header, *table]]
        lines += ["", summary(methods), ""]
    return "\n".join(lines)


def at_emphasis(results: dict, emphasis: float) -> dict:
    """The results with ours at ``emphasis`` as OURS and without ours at other values."""
    return {t: {(OURS if m == emphasis_name(emphasis) else m): v for m, v in methods.items()
                if m == emphasis_name(emphasis) or not m.startswith(f"{OURS} e=")}
            for t, methods in results.items()}


def emphasis_table(results: dict, emphases: list[float], markdown: bool,
                   unit: str = "pair type") -> str:
    """Ours at every emphasis: per pair type (or other ``unit``) its metrics, mean rank and
    fewest wins."""
    header = [unit, "emphasis", *METRIC_NAMES, "mean rank", "fewest wins"]
    rows, overall = [], {}
    for emphasis in emphases:
        tables = at_emphasis(results, emphasis)
        ranks = []
        for pair_type, methods in sorted(tables.items()):
            rank_of = {m: r for m, r, _ in rank_rows(methods)}
            fewest = min(w for _, _, w in rank_rows(methods) if w is not None)
            ranks.append(rank_of[OURS])
            rows.append([pair_type, f"{emphasis:g}",
                         *(f"{methods[OURS][k]:.3f}" for k in METRIC_NAMES),
                         f"{rank_of[OURS]:.2f}", f"{fewest}/{len(METRIC_NAMES)}"])
        overall[emphasis] = sum(ranks) / len(ranks)
    rows.sort(key=lambda row: row[0])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    best = min(overall, key=overall.get)
    lines += ["", f"mean rank over the {unit}s: " + ", ".join(
        f"e={e:g} {r:.2f}" for e, r in overall.items()) + f"; lowest at e={best:g}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/harvard")
    parser.add_argument("--peers", default="../shared/data/peers")
    parser.add_argument("--weights", default=None, help="default: the bundled 2D model")
    parser.add_argument("--pair-type", action="append", choices=sorted(PAIR_TYPES),
                        help="score only this pair type (repeatable; default: all)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N validation pairs of each type (a quick check)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--per-case", action="store_true",
                        help="rank each held-back case on its own instead of each pair type")
    parser.add_argument("--emphasis", action="append", default=None, metavar="E",
                        help="score the model at this emphasis (repeatable; default: the "
                             "network's own)")
    parser.add_argument("--quality", default="fast", metavar="fast|best",
                        help="best: refine the model's images as fuse --quality best")
    parser.add_argument("--refine-steps", default=None, metavar="N",
                        help="--quality best: refinement steps (default: fuse's)")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be at least 1, got {args.limit}")
    try:
        peers = Path(args.peers)
        if not peers.is_dir():
            raise FileNotFoundError(f"no published methods' results folder {peers}")
        _, val = split_by_case(find_pairs(args.data))
        kept: dict[str, list[HarvardPair]] = {}
        for pair in val:
            if args.pair_type is None or pair.pair_type in args.pair_type:
                kept.setdefault(pair.pair_type, []).append(pair)
        pairs = [p for group in kept.values() for p in group[:args.limit]]
        paths = peer_image_paths(peers, pairs)
        emphases = [parse_emphasis(e) for e in args.emphasis or []]
        if parse_quality(args.quality) == "fast" and args.refine_steps is not None:
            raise ValueError("--refine-steps applies to --quality best")
        refinement = (None if args.quality == "fast"
                      else RefineSettings.with_steps(args.refine_steps))
        model = load_fusion_model(args.weights, device="cpu")
        for emphasis in emphases:
            set_emphasis(model, emphasis)
    except (FileNotFoundError, ValueError, WeightsError) as error:
        sys.exit(f"rank_table: {error}")
    group = (lambda pair: f"{pair.pair_type} case {pair.case}") if args.per_case else (
        lambda pair: pair.pair_type)
    counts = Counter(group(p) for p in pairs)
    torch.set_num_threads(args.threads)
    # The tables go into docs/research/results.md, which is UTF-8, whatever the terminal's locale.
    sys.stdout.reconfigure(encoding="utf-8")
    started = time.time()
    results = score(pairs, model, lambda pair: {m: load_luma(path)
                                                for m, path in paths[pair.name].items()},
                    emphases, group, refinement)
    for emphasis in emphases:
        print(f"## emphasis {emphasis:g}\n")
        print(render(at_emphasis(results, emphasis), counts, args.markdown))
    if emphases:
        print(emphasis_table(results, emphases, args.markdown,
                             "held-back case" if args.per_case else "pair type"))
    else:
        print(render(results, counts, args.markdown))
    print(f"scored {len(pairs)} pairs in {time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
