"""One small benchmark end to end on real eval pairs, through the CLI."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.accuracy import HIST_EDGES, BenchConfig, data_errors, select_pairs, set_aside, summarise
from benchmarks.report import load_result, tables
from benchmarks.results import BenchResult, Case, DenseScore, ErrorSummary, MethodScore, RunSettings, Summary
from datagen.pairs import PairRecord, doubtful_ground_truth, read_pairs
from dsmar.cli import main

SRIF_SAR = PairRecord(
    pair_id="srif-sar-031",
    split="eval",
    source="SRIF (Li et al. 2023)",
    category="optical-sar",
    fixed_path=Path("a.jpg"),
    moving_path=Path("b.jpg"),
    fixed_modality="optical",
    moving_modality="sar",
    gt_path=Path("gt.json"),
    gt_kind="similarity",
    accuracy_px=2.0,
)


def test_bench_accuracy_end_to_end(pairs_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "accuracy",
            "--pairs",
            str(pairs_dir),
            "--split",
            "eval",
            "--methods",
            "identity,cfog",
            "--limit",
            "3",
            "--workers",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    on_disk = json.loads((out / "results.json").read_text())
    assert "pixels_under_1px" in on_disk["summary"]["dense"]["cfog"]["overall"]  # results.json keeps its keys
    result = load_result(out / "results.json")
    assert result.to_dict() == on_disk
    assert len(result.cases["dense"]) == 3
    dense = result.summary.dense
    assert dense["cfog"]["overall"].failed == 0
    assert dense["cfog"]["overall"].recovery_median < 0.5 * dense["identity"]["overall"].recovery_median
    assert dense["cfog"]["overall"].folding < 0.001  # measured 0.0 on these 3 pairs
    report = (out / "report.md").read_text()
    assert "epe_distribution.png" in report and (out / "epe_distribution.png").exists()
    assert list(result.set_aside) == ["srif-sar-141"]  # the 3 evenly spread eval pairs hold one
    assert result.summary.dense_usable["cfog"]["overall"].pairs == 2
    assert "### Dense track on the 2 pairs with a usable ground truth" in report
    assert any(p.name.startswith("checker_best_") for p in out.iterdir())
    captured = capsys.readouterr()
    assert "Dense track" in captured.out
    lines = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert len(lines) == 3 + len(result.cases["landmarks"]), captured.err
    assert re.fullmatch(r"\[1/\d+\] dense \S+, [\d.]+ pairs/min, ETA \d+ (s|min|h)", lines[0]), lines[0]
    assert re.fullmatch(r"\[(\d+)/\1\] \w+ \S+, [\d.]+ pairs/min, in \d+ (s|min|h)", lines[-1]), lines[-1]


def test_limit_keeps_categories_spread(pairs_dir):
    picked = select_pairs(BenchConfig(pairs_dir, "eval", limit=12))
    assert len(picked) == 12
    assert len({r.category for r in picked}) >= 4


def test_bad_pairs_dir_is_one_line_error(tmp_path, capsys):
    assert main(["bench", "accuracy", "--pairs", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no pairs.csv" in capsys.readouterr().err


def test_pairs_with_identical_images_are_excluded_as_data_errors(pairs_dir):
    records = read_pairs(pairs_dir, "eval")
    broken = data_errors(records)
    assert all(r.fixed_path == r.moving_path for r in records if r.pair_id in broken)
    picked = {r.pair_id for r in select_pairs(BenchConfig(pairs_dir, "eval"))}
    assert not picked & set(broken)
    assert len(picked) + len(broken) == len(records)


def test_malformed_method_spec_is_one_line_error(pairs_dir, tmp_path, capsys):
    code = main(
        ["bench", "accuracy", "--pairs", str(pairs_dir), "--methods", "dsmar:augment", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "not key=value" in capsys.readouterr().err


def test_unknown_method_option_fails_before_the_run(pairs_dir, tmp_path, capsys):
    code = main(
        [
            "bench",
            "accuracy",
            "--pairs",
            str(pairs_dir),
            "--methods",
            "identity,cfog:foo=1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "foo" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_only_srif_optical_sar_ground_truth_is_doubtful():
    assert "SRIF optical-SAR" in doubtful_ground_truth(SRIF_SAR)
    assert doubtful_ground_truth(replace(SRIF_SAR, category="optical-infrared")) is None
    assert doubtful_ground_truth(replace(SRIF_SAR, pair_id="cfog-opt-sar-1", source="CFOG (Ye et al.)")) is None


def test_the_eval_split_sets_aside_its_30_srif_optical_sar_pairs(pairs_dir):
    aside = set_aside(read_pairs(pairs_dir, "eval"))
    assert len(aside) == 30 and all(pair_id.startswith("srif-sar") for pair_id in aside)


def _fake_case(pair_id: str, category: str, epe: dict[str, float]) -> Case:
    """A dense case as dense_case makes it, each method with a constant error `epe[method]` on 100 pixels."""
    methods: dict[str, MethodScore] = {
        m: DenseScore(
            epe=ErrorSummary(e, e),
            epe_hist=np.histogram(np.full(100, e), HIST_EDGES)[0].tolist(),
            recovery=ErrorSummary(e / 2, e / 2),
            folding=0.0,
            seconds=1.0,
            megapixels=1.0,
        )
        for m, e in epe.items()
    }
    return Case(pair_id, category, methods, shape=(10, 10))


def _result(summary: Summary, cases: list[Case], aside: dict[str, str]) -> BenchResult:
    settings = RunSettings("pairs", "eval", ("identity", "cfog"), 0, None, 1)
    return BenchResult({}, aside, settings, 1.0, 1.0, {"dense": cases, "landmarks": []}, summary)


def test_summary_and_report_show_the_pairs_with_a_usable_ground_truth():
    cases = [
        _fake_case("srif-sar-001", "optical-sar", {"identity": 7.0, "cfog": 7.5}),
        _fake_case("srif-sar-002", "optical-sar", {"identity": 6.0, "cfog": 6.5}),
        _fake_case("jm-SO1", "optical-sar", {"identity": 5.0, "cfog": 0.5}),
        _fake_case("jm-MO1", "optical-map", {"identity": 4.0, "cfog": 1.5}),
        _fake_case("jm-MO2", "optical-map", {"identity": 3.0, "cfog": 1.0}),
    ]
    results, methods = {"dense": cases, "landmarks": []}, ("identity", "cfog")
    aside = {c.pair_id: doubtful_ground_truth(SRIF_SAR) or "" for c in cases[:2]}
    summary = summarise(results, methods, aside)
    assert summary.dense == summarise(results, methods).dense  # the full tables stay as they are
    assert summary.dense["cfog"]["overall"].epe_median == 1.5
    usable = summary.dense_usable["cfog"]
    assert set(usable) == {"optical-sar", "overall"}
    assert usable["overall"].pairs == 3 and usable["overall"].epe_median == 1.0
    assert usable["optical-sar"].pairs == 1 and usable["optical-sar"].recovery_median == 0.25
    assert summarise(results, methods, {}).dense_usable == {}

    result = _result(summary, cases, aside)
    assert BenchResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    text = tables(result)
    heading = (
        "### Dense track on the 3 pairs with a usable ground truth "
        "(the 2 SRIF optical-SAR pairs set aside, see Known data problem in benchmarks/tuning.md)"
    )
    assert text.index("### Dense track, overall") < text.index(heading) < text.index("per category")
    section = text[text.index(heading) : text.index("### Dense track, median EPE")]
    assert "| cfog | 3 | 0 | 1.00 | 1.00 |" in section  # EPE mean and median over the usable pairs only
    assert "#### optical-sar on its 1 pairs with a usable ground truth" in section
    assert "| cfog | 1 | 0 | 0.50 | 0.50 | 100% | 0.25 |" in section


def test_report_shows_the_gpu_speed_of_the_whole_method_where_it_was_measured():
    cases = [_fake_case("jm-MO1", "optical-map", {"identity": 4.0, "cfog": 1.0})]
    summary = summarise({"dense": cases, "landmarks": []}, ("identity", "cfog"))
    network = {"gpu": "NVIDIA H100", "size": 1024, "s_per_mp_fp32": 0.013}
    whole = _result(summary, cases, {})
    for speed, expected in (
        (network, "0.013 s/MP (the network's forward pass)."),
        ({**network, "method_mp_per_s": 24.5}, "0.013 s/MP; the whole method with its defaults: 24.5 MP/s."),
    ):
        text = tables(replace(whole, gpu_speed=speed))
        assert "dsmar on a GPU (NVIDIA H100, 1024 x 1024 px, fp32" in text and expected in text
    assert "dsmar on a GPU" not in tables(whole)


def test_best_method_is_ranked_on_the_pairs_with_a_usable_ground_truth():
    from benchmarks.report import best_method

    cases = [  # mind wins on the set-aside pairs only, which decide the full median
        _fake_case("srif-sar-001", "optical-sar", {"identity": 7.0, "cfog": 7.5, "mind": 6.0}),
        _fake_case("srif-sar-002", "optical-sar", {"identity": 6.0, "cfog": 6.5, "mind": 5.0}),
        _fake_case("jm-MO1", "optical-map", {"identity": 4.0, "cfog": 1.0, "mind": 1.2}),
    ]
    results, methods = {"dense": cases, "landmarks": []}, ("identity", "cfog", "mind")
    aside = {c.pair_id: doubtful_ground_truth(SRIF_SAR) or "" for c in cases[:2]}
    assert best_method(summarise(results, methods)) == "mind"
    assert best_method(summarise(results, methods, aside)) == "cfog"


def test_method_list_splits_only_on_commas_outside_brackets():
    from dsmar.commands.bench import split_methods

    assert split_methods("mind, dsmar:polish=[5,3],x:pair=(1,2),y:o={'a':1,'b':2},") == (
        "mind",
        "dsmar:polish=[5,3]",
        "x:pair=(1,2)",
        "y:o={'a':1,'b':2}",
    )


def test_update_docs_regenerates_the_accuracy_page_from_the_run(pairs_dir, tmp_path, monkeypatch, capsys):
    """`--update-docs` writes the page the command names (dsmar.commands.bench.DOCS, here moved into tmp)."""
    from dsmar.commands import bench

    shipped = bench.DOCS.read_bytes()
    docs = tmp_path / "docs" / "accuracy.md"
    monkeypatch.setattr(bench, "DOCS", docs)
    argv = ["bench", "accuracy", "--pairs", str(pairs_dir), "--methods", "identity", "--limit", "1"]
    assert main([*argv, "--workers", "1", "--no-landmarks", "--out", str(tmp_path / "out"), "--update-docs"]) == 0
    assert f"docs: {docs}" in capsys.readouterr().out
    page = docs.read_text()
    result = load_result(tmp_path / "out" / "results.json")
    assert page.startswith("# Accuracy\n") and tables(result) in page
    assert "## Results on split `eval` (seed 0; 1 dense pairs, 0 landmark pairs;" in page
    rerun = "dsmar bench accuracy --split eval --methods identity --seed 0 --workers 1 --out bench-out --update-docs --limit 1"
    assert page.rstrip().endswith(f"## Rerun\n\n```\n{rerun}\n```")
    assert bench.DOCS == docs and (bench.REPO / "docs" / "accuracy.md").read_bytes() == shipped
