"""The rank table: mean ranks and wins on made-up tables, and one real run of
scripts/research/rank_table.py on two held-back CT-MRI pairs with the published methods' images."""

from __future__ import annotations

import subprocess
import sys

import pytest
from peer_results import DATA, ROOT, import_script, needs_data

from ClinicalFMambaLib.evaluation import metrics as M
from ClinicalFMambaLib.evaluation.ranking import mean_ranks, metric_wins

SCRIPT = ROOT / "scripts" / "research" / "rank_table.py"


@pytest.fixture
def rank_table(monkeypatch):
    return import_script(monkeypatch, "rank_table")


TINY = {"ours": {"EN": 5.0, "SD": 1.0, "PSNR": 3.0},
        "b": {"EN": 5.0, "SD": 2.0, "PSNR": 1.0},
        "c": {"EN": 4.0, "SD": 3.0, "PSNR": 2.0}}
COLUMNS = ("EN", "SD", "PSNR")


def test_mean_ranks_share_tied_places_and_wins_need_strictly_better():
    ranks = mean_ranks(TINY, COLUMNS)
    # EN: ours and b tie for first (1.5 each), c 3; SD: c, b, ours; PSNR: ours, c, b.
    assert ranks == pytest.approx({"ours": 5.5 / 3, "b": 6.5 / 3, "c": 2.0})
    assert sum(ranks.values()) == pytest.approx(6.0)  # 1 + 2 + 3 in every column
    assert metric_wins(TINY["ours"], TINY["b"], COLUMNS) == ["PSNR"]  # the EN tie is no win
    assert metric_wins(TINY["ours"], TINY["c"], COLUMNS) == ["EN", "PSNR"]


def test_lower_is_better_metrics_rank_and_win_the_other_way(monkeypatch):
    monkeypatch.setitem(M.HIGHER_IS_BETTER, "PSNR", False)
    assert mean_ranks(TINY, COLUMNS) == pytest.approx({"ours": 2.5, "b": 1.5, "c": 2.0})
    assert metric_wins(TINY["ours"], TINY["b"], COLUMNS) == []
    assert metric_wins(TINY["ours"], TINY["c"], COLUMNS) == ["EN"]


def test_nan_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        mean_ranks({"a": {"EN": float("nan")}, "b": {"EN": 1.0}}, ("EN",))


def test_rows_and_summary_of_a_made_up_ten_metric_table(rank_table):
    detail = ("EN", "SD", "SF", "AG")
    table = {"GeSeNet": {k: 1.0 if k in ("EN", "SD") else 0.5 for k in M.METRIC_NAMES},
             "mean": {k: 2.0 if k in detail else 0.0 for k in M.METRIC_NAMES},
             "ClinicalFMamba": {k: 1.0 for k in M.METRIC_NAMES}}
    rows = rank_table.rank_rows(table)
    # Ours: EN/SD tied with GeSeNet behind mean (2.5), SF/AG second, first on the other six.
    assert [(m, round(r, 6), w) for m, r, w in rows] == [
        ("ClinicalFMamba", 1.5, None), ("mean", 2.2, 6), ("GeSeNet", 2.3, 8)]
    assert rank_table.summary(table) == (
        "best mean rank: ClinicalFMamba (1.50); ClinicalFMamba: 1.50, place 1 of 3; "
        "fewest wins of ClinicalFMamba: 6/10 vs mean")
    text = rank_table.render({"CT-MRI": table}, {"CT-MRI": 1}, markdown=True)
    assert "### CT-MRI (1 validation pair)" in text
    assert "| mean | **2.000** | **2.000** | **2.000** | **2.000** | 0.000 |" in text
    assert "| **1.50** | — |" in text


def _markdown_rows(text: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| method")]
    return {cells[0].strip(): [c.strip().strip("*") for c in cells[1:]] for cells in rows}


def _run_on_two_ct_pairs(*options: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--pair-type", "CT-MRI", "--limit", "2",
                           *options, "--data", str(DATA / "harvard"),
                           "--peers", str(DATA / "peers")],
                          cwd=ROOT, capture_output=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_data
def test_real_run_on_two_ct_pairs():
    out = _run_on_two_ct_pairs("--markdown")
    assert "### CT-MRI (2 validation pairs)" in out
    rows = _markdown_rows(out)
    assert list(rows) == ["ClinicalFMamba", "mean", "max", "laplacian", "EMFusion", "GeSeNet",
                          "IFCNN-MAX", "SDNet", "U2Fusion"]
    ranks = {m: float(cells[10]) for m, cells in rows.items()}
    assert all(1 <= r <= 9 for r in ranks.values())
    assert sum(ranks.values()) == pytest.approx(45, abs=0.05)  # 1 + ... + 9, per metric
    assert rows["ClinicalFMamba"][11] == "—"
    wins = {m: int(cells[11].split("/")[0]) for m, cells in rows.items() if m != "ClinicalFMamba"}
    assert all(0 <= w <= 10 for w in wins.values())
    fewest = min(wins.values())
    assert f"fewest wins of ClinicalFMamba: {fewest}/10 vs " in out


@needs_data
def test_per_case_ranks_each_held_back_case_on_its_own():
    out = _run_on_two_ct_pairs("--per-case")
    # The first two CT-MRI validation pairs (by file name) are slices of case 2.
    assert "CT-MRI case 2 (2 validation pairs)" in out
    assert "CT-MRI (2 validation pairs)" not in out


def test_missing_peers_folder_is_one_line(rank_table, monkeypatch):
    missing = ROOT / "no-such-dir"
    monkeypatch.setattr(sys, "argv", ["rank_table.py", "--peers", str(missing)])
    with pytest.raises(SystemExit) as exit_:
        rank_table.main()
    assert exit_.value.code == f"rank_table: no published methods' results folder {missing}"
