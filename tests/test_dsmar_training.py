"""Training: the pack, GPU-side warps against the benchmark's inverse, and a tiny resumable run."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datagen.warps import invert_warp
from kernel.errors import InputError
from models.dsmar.flow import base_grid, sample_at
from models.dsmar.weights import load_weights, write_sidecar
from models.training.augment import WarpRanges, invert_warps, prepare_batch, random_warps, stretch
from models.training.average import WeightAverage
from models.training.config import StageConfig, TrainConfig, apply_variant, with_budget
from models.training.data import (
    BatchSampler,
    PackedPair,
    pack_split,
    read_pack,
    real_pairs,
    trusted_pairs,
    write_pack,
)
from models.training.trainer import Trainer, progress_line, stage_progress
from models.training.validate import median_difference, validate_weights


def synthetic_pack(path, n=6, size=80):
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(n):
        img = (rng.random((size, size)) * 255).astype(np.uint8)
        doubtful = "misaligned ground truth" if i == 5 else ""
        pairs.append(PackedPair(img, 255 - img, "optical", "sar" if i % 2 else "map", "test", f"p{i}", doubtful))
    return pairs, write_pack(pairs, path)


def tiny_cpu_run(tmp_path, **overrides) -> dict:
    """The config of a run of a tiny network on the CPU over a synthetic pack written under `tmp_path`."""
    synthetic_pack(tmp_path / "pack.npz")
    return {
        **json.loads(open("configs/train_small.json").read()),
        "pack": str(tmp_path / "pack.npz"),
        "out": str(tmp_path / "run"),
        "crop": 64,
        "margin": 16,
        "batch": 2,
        "device": "cpu",
        "model": {"channels": [8, 16, 16, 16], "hidden": 16, "refine_hidden": 8},
        **overrides,
    }


def test_pack_round_trip_and_sampler(tmp_path):
    pairs, digest = synthetic_pack(tmp_path / "pack.npz")
    back = read_pack(tmp_path / "pack.npz")
    assert len(back) == len(pairs) and len(digest) == 64
    assert back[1].moving_modality == "sar" and back[0].fixed.shape == (80, 80)
    assert np.abs(back[0].fixed.astype(int) - pairs[0].fixed).mean() < 40  # JPEG, lossy but close
    batch = BatchSampler(back, 64, 0, margin=16).sample(3)
    assert batch.images.shape == (3, 2, 96, 96)
    # Pairs smaller than a source crop are upscaled, never padded: no blank band to leak a warp.
    assert (batch.images.reshape(3, 2, -1).std(axis=2) > 20).all()
    assert (batch.images[:, :, -4:, :].std(axis=(2, 3)) > 20).all()
    assert back[5].doubtful and not back[0].doubtful
    assert [p.pair_id for p in trusted_pairs(back, ("p1", "p2"))] == ["p0", "p3", "p4"]
    train, val = pack_split(back, 0.2)
    assert len(val) == 1 and len(train) == 4  # the doubtful pair is in neither
    with pytest.raises(InputError):
        read_pack(tmp_path / "missing.npz")


def test_the_held_out_pairs_are_the_packs_whatever_the_runs_seed_and_exclusions(tmp_path):
    """A run with another seed, or one that leaves pairs out, must not train on the ledger's validation pairs."""
    synthetic_pack(tmp_path / "pack.npz", n=12)
    data = {**json.loads(open("configs/train_small.json").read()), "pack": str(tmp_path / "pack.npz"), "holdout": 0.25}
    splits = {}
    for seed, exclude in [(0, []), (1, []), (7, ["p2", "p3", "p4"])]:
        cfg = TrainConfig.from_dict({**data, "seed": seed, "exclude": exclude, "out": str(tmp_path / f"run-{seed}")})
        trainer = Trainer(cfg, log=lambda _: None)
        splits[seed] = ([p.pair_id for p in trainer.train_pairs], [p.pair_id for p in trainer.val_pairs])
    assert len(splits[0][1]) == 3
    assert splits[1] == splits[0] and splits[7][1] == splits[0][1]
    assert set(splits[7][0]) == set(splits[0][0]) - {"p2", "p3", "p4"}
    assert not set(splits[0][0]) & set(splits[0][1]) and "p5" not in splits[0][0] + splits[0][1]


def test_torch_inverse_matches_the_benchmark():
    gen = torch.Generator().manual_seed(0)
    w = random_warps(2, 64, WarpRanges(max_shift_px=6.0), gen, "cpu")
    t = invert_warps(w, iterations=30)
    for b in range(2):
        ref = invert_warp(w[b].numpy())
        assert np.abs(ref - t[b].numpy()).max() < 1e-3


def test_the_default_inversion_is_converged_on_the_configs_largest_warps():
    gen = torch.Generator().manual_seed(1)
    ranges = WarpRanges(max_shift_px=10.0, max_rotation_deg=2.0, max_scale=0.02, elastic_px=3.0)
    w = random_warps(8, 256, ranges, gen, "cpu")
    assert float((invert_warps(w) - invert_warps(w, iterations=40)).abs().max()) < 1e-4


def test_random_warps_stay_in_range():
    gen = torch.Generator().manual_seed(1)
    r = WarpRanges(max_shift_px=5.0, max_rotation_deg=0.0, max_scale=0.0, elastic_px=0.0)
    w = random_warps(4, 32, r, gen, "cpu")
    assert (w.amax(dim=(2, 3)) - w.amin(dim=(2, 3))).abs().max() < 1e-4  # pure translation
    assert w.abs().max() <= 5.0


def _smooth_source(size: int) -> torch.Tensor:
    from scipy import ndimage

    img = ndimage.gaussian_filter(np.random.default_rng(0).random((size, size)), 2)
    img = ((img - img.min()) / np.ptp(img) * 255).astype(np.uint8)
    return torch.from_numpy(np.stack([img, img])[None])


def test_prepared_batch_is_consistent():
    gen = torch.Generator().manual_seed(2)
    prep = prepare_batch(
        _smooth_source(96), torch.zeros(1, 2, dtype=torch.long), WarpRanges(max_shift_px=4.0), gen, crop=64, augment=0.0
    )
    # Warping the moving raw image by the target brings it back onto the fixed one, everywhere.
    back = sample_at(prep.moving_raw, base_grid((64, 64), prep.target) + prep.target, padding="border")
    m = prep.mask[0, 0]
    assert m.float().mean() > 0.7
    err = (back[0, 0] - prep.fixed_raw[0, 0])[m].abs().mean()
    assert err < 0.02
    assert prep.fixed.shape == (1, 2, 64, 64) and prep.moving.shape == (1, 2, 64, 64)


def test_validity_carries_no_trace_of_the_warp():
    """The moving stream is sampled inside its source: no no-data border follows the shift."""
    gen = torch.Generator().manual_seed(4)
    ranges = WarpRanges(max_shift_px=14.0, max_rotation_deg=2.0, elastic_px=3.0)
    prep = prepare_batch(
        _smooth_source(128).expand(6, -1, -1, -1),
        torch.zeros(6, 2, dtype=torch.long),
        ranges,
        gen,
        crop=64,
        augment=1.0,
        nodata=0.0,
    )
    assert prep.target.abs().amax() > 3.0
    assert bool((prep.moving[:, 1] == 1).all()) and bool((prep.fixed[:, 1] == 1).all())
    # With no-data drawn, each stream gets its own half-planes, whatever the warp.
    prep = prepare_batch(
        _smooth_source(128).expand(64, -1, -1, -1),
        torch.zeros(64, 2, dtype=torch.long),
        ranges,
        gen,
        crop=64,
        augment=1.0,
        nodata=0.5,
    )
    lost_f = (prep.fixed[:, 1] == 0).flatten(1).any(1)
    lost_m = (prep.moving[:, 1] == 0).flatten(1).any(1)
    assert 10 < int(lost_f.sum()) < 54 and 10 < int(lost_m.sum()) < 54
    assert bool((lost_f != lost_m).any())
    assert not bool(prep.mask[~prep.fixed[:, 1:].bool()].any())


def test_stretch_matches_inference_normalisation():
    from models.dsmar.infer import network_input

    rng = np.random.default_rng(3)
    img = rng.random((1, 40, 40)).astype(np.float32)
    ref = network_input(torch.from_numpy(img), "optical").numpy()
    got = stretch(torch.from_numpy(img)[None], torch.ones(1, 1, 40, 40, dtype=torch.bool))[0].numpy()
    assert np.abs(ref - got).max() < 0.02


def test_packed_real_pairs_carry_the_one_doubtful_ground_truth_rule(tmp_path):
    """The pack records `datagen.pairs.doubtful_ground_truth` per pair; packs without it are refused."""
    import csv

    from datagen.pairs import doubtful_ground_truth, read_pairs

    real = "../shared/data/pairs"
    rows = list(csv.DictReader(open(f"{real}/pairs.csv")))
    picked = [
        next(r for r in rows if r["pair_id"].startswith(p) and r["split"] == "train") for p in ("srif-sar", "srif-map")
    ]
    root = tmp_path / "pairs"
    root.mkdir()
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in picked:
            writer.writerow({**row, **{k: str(Path(real, row[k]).resolve()) for k in ("fixed", "moving", "gt")}})
    packed = real_pairs(root)
    expected = {r.pair_id: doubtful_ground_truth(r) or "" for r in read_pairs(root)}
    assert {p.pair_id: p.doubtful for p in packed} == expected
    assert [bool(p.doubtful) for p in packed] == [True, False]
    assert [p.pair_id for p in trusted_pairs(packed)] == [picked[1]["pair_id"]]
    write_pack(packed, tmp_path / "pack.npz")
    assert [p.doubtful for p in read_pack(tmp_path / "pack.npz")] == [p.doubtful for p in packed]
    old = dict(np.load(tmp_path / "pack.npz"))
    old["meta"] = np.frombuffer(
        json.dumps([[*row[:4]] for row in json.loads(old["meta"].tobytes())]).encode(), np.uint8
    )
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(InputError, match="rebuild it"):
        read_pack(tmp_path / "old.npz")


def test_config_variants_and_budget():
    cfg = TrainConfig.from_json("configs/train_gpu.json")
    assert apply_variant(cfg, "no-attention").model.attention is False
    assert all(s.name != "refine" for s in apply_variant(cfg, "no-refinement").stages)
    assert apply_variant(cfg, "no-jacobian").losses.jacobian == 0.0
    assert sum(s.seconds for s in with_budget(cfg, 100).stages) == pytest.approx(100)
    with pytest.raises(InputError):
        apply_variant(cfg, "no-everything")
    with pytest.raises(InputError):
        TrainConfig.from_dict({"stages": [{"name": "dream", "steps": 1}]})


def test_typed_config_reads_the_shipped_records_and_configs():
    """The JSON configs and the configs stored with the shipped weights load into typed model and warp parts."""
    import glob

    from models.dsmar.network import DSMARConfig

    for path in glob.glob("models/weights/**/*.json", recursive=True):
        stored = json.loads(open(path).read()).get("record", {}).get("config")
        if stored:
            cfg = TrainConfig.from_dict(stored)
            assert cfg.warp.max_shift_px == stored["warp"]["max_shift_px"]
            assert cfg.model == DSMARConfig.from_dict(stored["model"])
            assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    small = TrainConfig.from_json("configs/train_small.json")
    assert small.warp.canvas_px == (128.0, 512.0) and small.model == DSMARConfig()
    with pytest.raises(InputError, match="'warp'"):
        TrainConfig.from_dict({"warp": {"max_shift": 3.0}})


def test_tiny_run_exports_resumes_and_records(tmp_path):
    synthetic_pack(tmp_path / "pack.npz")
    data = json.loads(open("configs/train_small.json").read())
    data.update(
        pack=str(tmp_path / "pack.npz"),
        out=str(tmp_path / "run"),
        crop=64,
        margin=16,
        batch=2,
        model={"channels": [8, 16, 16, 16], "hidden": 16, "refine_hidden": 8},
        stages=[
            {"name": "contrast", "steps": 1},
            {"name": "field", "steps": 2},
            {"name": "refine", "steps": 1},
            {"name": "joint", "steps": 1},
        ],
    )
    cfg = TrainConfig.from_dict(data)
    meta = Trainer(cfg, log=lambda _: None).run()
    model, info = load_weights(tmp_path / "run" / f"{cfg.name}.pt")
    record = info["record"]
    assert record["finished"] and record["total_steps"] == 5 and len(record["data_sha256"]) == 64
    assert [h["stage"] for h in record["history"]] == ["contrast", "field", "refine", "joint"]
    assert "val_epe_median" in record["history"][1]
    assert meta["sha256"] == info["sha256"]
    # A second run of the same config resumes from the finished checkpoint and trains no more.
    again = Trainer(cfg, log=lambda _: None)
    assert again.try_resume() and again.state["stage"] == 4
    assert again.run()["record"]["total_steps"] == 5
    # Another run starts from the exported weights (training continued across sessions).
    logged = []
    warm = Trainer(
        TrainConfig.from_dict(
            {**data, "out": str(tmp_path / "warm"), "init": str(tmp_path / "run" / f"{cfg.name}.pt")}
        ),
        log=logged.append,
    )
    assert any("initialised from" in line and f"{len(model.state_dict())}/" in line for line in logged)
    for name, tensor in model.state_dict().items():
        assert torch.allclose(warm.model.state_dict()[name].float(), tensor.float())
    # The method's tuned settings belong to the network: a continuation's weights carry them, an ablation's do not.
    run_pt, inference = tmp_path / "run" / f"{cfg.name}.pt", {"polish": 5, "tuned": "on the train split"}
    write_sidecar(run_pt, {"inference": inference})
    continued = TrainConfig.from_dict({**data, "out": str(tmp_path / "continued"), "init": str(run_pt)})
    assert Trainer(continued, log=lambda _: None).export()["inference"] == inference
    variant = apply_variant(
        TrainConfig.from_dict({**data, "out": str(tmp_path / "variant"), "init": str(run_pt)}), "no-attention"
    )
    assert "inference" not in Trainer(variant, log=lambda _: None).export()
    # The ledger's scorer names the pack its held-out crops came from, and scores the same weights the same way twice.
    config = tmp_path / "ledger.json"
    config.write_text(json.dumps({**data, "out": str(tmp_path / "unused")}))
    first, second = (validate_weights(tmp_path / "run" / f"{cfg.name}.pt", config, threads=1) for _ in range(2))
    assert first == second and first["pack_sha256"] == record["data_sha256"]
    assert 0 <= first["val_under_1px"] <= 1 and first["val_epe_median"] > 0
    # Paired against other weights on the same crops: the difference of the two ledger medians, inside its interval.
    fresh = Trainer(TrainConfig.from_dict({**data, "out": str(tmp_path / "fresh")}), log=lambda _: None)
    fresh_pt = tmp_path / "fresh" / f"{cfg.name}.pt"
    fresh.export()
    paired = median_difference(fresh_pt, run_pt, config, threads=1, draws=50)
    expected = validate_weights(fresh_pt, config, threads=1)["val_epe_median"] - first["val_epe_median"]
    assert paired["median_difference"] == pytest.approx(expected, abs=1e-6) and paired["median_difference"] != 0
    assert paired["interval_90"][0] <= paired["median_difference"] <= paired["interval_90"][1]
    assert median_difference(run_pt, run_pt, config, threads=1, draws=50) == {
        "median_difference": 0.0,
        "interval_90": [0.0, 0.0],
    }


def test_bf16_trains_on_the_cpu_and_the_ledger_scores_in_float32(tmp_path):
    data = tiny_cpu_run(tmp_path, bf16=True, stages=[{"name": "joint", "steps": 2}])
    trainer = Trainer(TrainConfig.from_dict(data), log=lambda _: None)
    batch = trainer._val[0]
    with trainer._autocast():
        features = trainer.model.encoder(batch.fixed, batch.moving, batch.fixed_modality, batch.moving_modality)
    assert features[0][0].dtype == torch.bfloat16
    loss = trainer.run()["record"]["history"][-1]["loss"]
    assert all(np.isfinite(v) for v in loss.values())
    # The ledger scores a run's weights the same under a bf16 config as under a float32 one.
    scores = []
    for bf16 in (True, False):
        config = tmp_path / f"ledger-{bf16}.json"
        config.write_text(json.dumps({**data, "bf16": bf16, "out": str(tmp_path / "unused")}))
        scores.append(validate_weights(tmp_path / "run" / f"{trainer.cfg.name}.pt", config, threads=1))
    assert scores[0] == scores[1]


def test_a_missing_pack_says_how_to_build_it(tmp_path, capsys):
    """The README's `dsmar train --config configs/train_small.json` on a fresh clone: advice, no traceback."""
    from dsmar.cli import main

    config = tmp_path / "train.json"
    config.write_text(
        json.dumps({**json.loads(open("configs/train_small.json").read()), "pack": str(tmp_path / "pack.npz")})
    )
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"training pack {tmp_path / 'pack.npz'} not found" in err
    assert "add --build-pack PAIRS" in err and "../shared/data/pairs" in err


def _tiny_pairs_folder(pairs_dir, root, per_split: int = 2):
    """A pairs.csv in `root` naming a few train and eval pairs of the real folder (read there, by absolute path)."""
    with open(pairs_dir / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = [r for r in rows if r["split"] == "train" and r["pair_id"].startswith("srif-infrared")][:per_split]
    chosen += [r for r in rows if r["split"] == "eval" and r["pair_id"].startswith("srif-infrared")][:per_split]
    for row in chosen:
        row.update({key: str(pairs_dir / row[key]) for key in ("fixed", "moving", "gt")})
    root.mkdir()
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return [r["pair_id"] for r in chosen if r["split"] == "train"], [
        r["pair_id"] for r in chosen if r["split"] == "eval"
    ]


def test_train_builds_a_pack_without_eval_pairs_and_exports_weights(pairs_dir, tmp_path, capsys):
    """`dsmar train --build-pack`: the pack holds the train split and synthetic scenes, never an eval pair."""
    from dsmar.cli import main
    from models.training.data import read_pack

    train_ids, eval_ids = _tiny_pairs_folder(pairs_dir, tmp_path / "pairs")
    assert len(train_ids) == len(eval_ids) == 2
    config = tmp_path / "tiny.json"
    config.write_text(
        json.dumps(
            {
                **json.loads(open("configs/train_small.json").read()),
                "name": "tiny",
                "pack": str(tmp_path / "pack.npz"),
                "crop": 64,
                "margin": 16,
                "batch": 2,
                "holdout": 0.0,
                "model": {"channels": [8, 16, 16, 16], "hidden": 16, "refine_hidden": 8},
                "stages": [{"name": name, "steps": 1} for name in ("contrast", "field", "refine", "joint")],
            }
        )
    )
    argv = ["train", "--config", str(config), "--build-pack", str(tmp_path / "pairs"), "--synthetic", "1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'pack.npz'}: 4 pairs" in out  # 2 train pairs + 1 synthetic scene (SAR and DEM)
    packed = [p.pair_id for p in read_pack(tmp_path / "pack.npz")]
    assert packed == [*train_ids, "synth-0000-sar", "synth-0000-dem"]
    assert not set(packed) & set(eval_ids)
    _, info = load_weights(tmp_path / "run" / "tiny.pt")
    assert info["record"]["finished"] and info["record"]["total_steps"] == 4
    assert f"weights {tmp_path / 'run' / 'tiny.pt'} sha256 {info['sha256']}" in out
    assert f"report {tmp_path / 'run' / 'report.md'}" in out
    # No held-out pairs (holdout 0): the report has the stages and the curve, and no held-out figure.
    assert "held-out crops" not in (tmp_path / "run" / "report.md").read_text()
    assert not (tmp_path / "run" / "held_out.png").exists() and (tmp_path / "run" / "curve.png").exists()
    # The pack is the pairs' and the pack's own, whatever the seed of the config that built it: a rebuild from a
    # run's config (another seed) writes the same bytes, so the ledger's held-out set stays the same.
    first = (tmp_path / "pack.npz").read_bytes()
    config.write_text(json.dumps({**json.loads(config.read_text()), "seed": 20}))
    assert main([*argv, "--out", str(tmp_path / "run-20")]) == 0
    assert (tmp_path / "pack.npz").read_bytes() == first


def test_throughput_times_the_whole_method_beside_the_network(capsys):
    """`python -m models.training.throughput` reports the network's forward pass, the whole method with the shipped
    weights (as MP/s too) and `register_pair(method="dsmar")`, which adds the API's warp, on the device at hand (here
    the CPU)."""
    from models.training.throughput import device_agreement, main

    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "dsmar.pt"
    assert main([str(weights), "--size", "128"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == "cpu" and result["size"] == 128
    assert result["weights_sha256"] == load_weights(weights)[1]["sha256"]
    assert result["s_per_mp_fp32"] > 0 and result["method_s_per_mp"] > 0
    assert result["method_mp_per_s"] == pytest.approx(1 / result["method_s_per_mp"])
    assert result["register_pair_s_per_mp"] > 0
    # A GPU window compares the device's field with the CPU's; the CPU against itself is the same field.
    assert device_agreement(weights, torch.device("cpu"), 128) == {"median_px": 0.0, "p99_px": 0.0}


def test_throughput_records_a_gpu_speed_only_on_a_gpu(tmp_path, capsys):
    """`--record` writes `gpu_throughput` into the sidecar; where no GPU is visible it refuses in one line and
    leaves the sidecar as it was."""
    import shutil

    from models.training.throughput import main

    shipped = Path(__file__).resolve().parents[1] / "models" / "weights" / "dsmar.pt"
    weights = tmp_path / "dsmar.pt"
    shutil.copy(shipped, weights)
    shutil.copy(shipped.with_suffix(".json"), weights.with_suffix(".json"))
    before = weights.with_suffix(".json").read_bytes()
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the refusal is for hosts without one")
    assert main([str(weights), "--size", "128", "--record"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "throughput: error: --record writes a GPU speed, and no GPU is visible here"
    ]
    assert weights.with_suffix(".json").read_bytes() == before


def test_the_weight_average_follows_the_steps_and_gives_the_model_back():
    model = torch.nn.Linear(2, 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay=0.75)
    with torch.no_grad():
        model.weight.add_(4.0)
    average.update(model)
    assert torch.allclose(average.shadow["weight"], start["weight"] + 1.0)  # a quarter of the way
    with average.applied(model):
        assert torch.allclose(model.weight, start["weight"] + 1.0)
    assert torch.allclose(model.weight, start["weight"] + 4.0)
    with pytest.raises(ValueError):
        average.load_state_dict({"weight": start["weight"]})


def test_a_run_with_a_weight_average_exports_scores_and_resumes_the_average(tmp_path):
    data = tiny_cpu_run(tmp_path, ema=0.5, stages=[{"name": "joint", "steps": 3, "lr": 1e-2}])
    cfg = TrainConfig.from_dict(data)
    trainer = Trainer(cfg, log=lambda _: None)
    trainer.run()
    exported, _ = load_weights(tmp_path / "run" / f"{cfg.name}.pt")
    raw = trainer.model.state_dict()
    for name, tensor in exported.state_dict().items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor.float(), trainer.average.shadow[name].half().float())
    assert any(not torch.equal(raw[k], trainer.average.shadow[k]) for k in trainer.average.shadow)
    again = Trainer(cfg, log=lambda _: None)
    assert again.try_resume()
    assert all(torch.equal(again.average.shadow[k], v) for k, v in trainer.average.shadow.items())
    with pytest.raises(InputError, match="ema"):
        TrainConfig.from_dict({**data, "ema": 1.0})


def test_a_training_log_line_gives_the_rate_and_the_eta_of_its_stage():
    joint = StageConfig(name="joint", seconds=400.0, lr=1e-4)
    assert stage_progress(joint, 50, 100.0) == 0.25
    assert stage_progress(StageConfig(name="field", steps=200, seconds=1e6, lr=1e-4), 150, 10.0) == 0.75
    assert progress_line("joint", 50, 100.0, stage_progress(joint, 50, 100.0), 8) == (
        "joint step 50 (25 %), 0.5 steps/s, 4 crops/s, ETA 5 min, t=100s"
    )
    assert progress_line("joint", 0, 0.0, 0.0, 8) == "joint step 0 (0 %), t=0s"


def test_a_run_leaves_a_report_with_its_stages_curve_and_held_out_crops(tmp_path):
    from PIL import Image

    stages = [{"name": "field", "steps": 1, "lr": 1e-3}, {"name": "joint", "steps": 50, "lr": 1e-4}]
    cfg = TrainConfig.from_dict(tiny_cpu_run(tmp_path, stages=stages, val_batches=1))
    Trainer(cfg, log=lambda _: None).run()
    out = Path(cfg.out)
    _, meta = load_weights(out / f"{cfg.name}.pt")
    joint = meta["record"]["history"][1]
    text = (out / "report.md").read_text()
    assert f"sha256 `{meta['sha256'][:12]}`, 51 steps (102 crops)" in text
    assert f"| joint | 50 | {joint['seconds']:,.0f} | 0.0001 | {joint['val_epe_median']:.3f} / " in text
    assert "![loss curve](curve.png)" in text and "![held-out crops](held_out.png)" in text
    # One curve point every 50 steps, kept in the checkpoint so that a resumed run's curve goes on.
    blob = torch.load(out / "checkpoint.pt", weights_only=True)
    assert [(c["stage"], c["total_steps"]) for c in json.loads(blob["state"])["curve"]] == [("joint", 51)]
    assert Image.open(out / "held_out.png").size == (800, 544)  # one row of 272 px per crop: the batch's two
    assert Image.open(out / "curve.png").size[0] > 0
    assert not list(out.glob("*.tmp*"))


def test_a_report_that_cannot_be_written_leaves_the_run_going(tmp_path):
    cfg = TrainConfig.from_dict(tiny_cpu_run(tmp_path, stages=[{"name": "field", "steps": 2, "lr": 1e-3}]))
    (Path(cfg.out) / "report.md").mkdir(parents=True)  # a folder where the report goes: its last rename fails
    logged: list[str] = []
    meta = Trainer(cfg, log=logged.append).run()
    assert meta["record"]["finished"] and meta["record"]["history"][0]["total_steps"] == 2
    assert any(line.startswith("report not written: IsADirectoryError") for line in logged)
    assert not list(Path(cfg.out).glob(".*.tmp"))  # the temporary files are gone
