"""One small benchmark end to end on real eval pairs, through the CLI."""

from __future__ import annotations

import json

from benchmarks.accuracy import BenchConfig, data_errors, method_spec, select_pairs
from benchmarks.pairs import read_pairs
from dsmar.cli import main


def test_bench_accuracy_end_to_end(pairs_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main([
        "bench", "accuracy", "--pairs", str(pairs_dir), "--split", "eval", "--methods", "identity,cfog",
        "--limit", "3", "--workers", "1", "--out", str(out),
    ])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert len(result["cases"]["dense"]) == 3
    dense = result["summary"]["dense"]
    assert dense["cfog"]["overall"]["failed"] == 0
    assert dense["cfog"]["overall"]["recovery_median"] < 0.5 * dense["identity"]["overall"]["recovery_median"]
    assert 0.0 <= dense["cfog"]["overall"]["folding"] <= 1.0
    report = (out / "report.md").read_text()
    assert "epe_distribution.png" in report and (out / "epe_distribution.png").exists()
    assert any(p.name.startswith("checker_best_") for p in out.iterdir())
    assert "Dense track" in capsys.readouterr().out


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


def test_method_specs_carry_options():
    assert method_spec("dsmar") == ("dsmar", {})
    assert method_spec("dsmar:augment=4:device=cpu") == ("dsmar", {"augment": 4, "device": "cpu"})


def test_malformed_method_spec_is_one_line_error(pairs_dir, tmp_path, capsys):
    code = main(["bench", "accuracy", "--pairs", str(pairs_dir), "--methods", "dsmar:augment",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "not key=value" in capsys.readouterr().err


def test_unknown_method_option_fails_before_the_run(pairs_dir, tmp_path, capsys):
    code = main(["bench", "accuracy", "--pairs", str(pairs_dir), "--methods", "identity,cfog:foo=1",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "foo" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
