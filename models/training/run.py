"""Command-line entry of training, shared by `dsmar train` and `python -m models.training`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kernel.errors import DsmarError, InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config JSON (configs/train_small.json, ...)")
    parser.add_argument("--out", help="output folder (checkpoints, weights, log); overrides the config")
    parser.add_argument("--name", help="run name (weights file stem); overrides the config")
    parser.add_argument("--variant", default="full", help="full | no-attention | no-refinement | no-jacobian")
    parser.add_argument("--budget-s", type=float, help="rescale the stages' seconds to this wall-clock total")
    parser.add_argument("--device", help="cpu, cuda or auto; overrides the config")
    parser.add_argument("--batch", type=int, help="batch size; overrides the config")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument(
        "--build-pack",
        metavar="PAIRS",
        help="first (re)build the config's training pack from "
        "the train split of this pairs folder (plus synthetic scenes)",
    )
    parser.add_argument("--synthetic", type=int, default=80, help="synthetic scenes in a built pack")
    parser.add_argument(
        "--unlabeled",
        metavar="FOLDER",
        help="with --build-pack: also pack this folder's roughly aligned optical-SAR pairs (no ground truth; "
        "../shared/data/unlabeled_sar) for the self-supervised term (losses.self_supervised)",
    )
    parser.add_argument("--throughput", action="store_true", help="time inference (s/MP at 1024^2) at the end")


def train(args) -> int:
    from models.training.config import TrainConfig, apply_variant, with_budget

    cfg = TrainConfig.from_json(args.config, out=args.out, name=args.name, device=args.device, batch=args.batch)
    if args.unlabeled and not args.build_pack:
        raise InputError("--unlabeled adds pairs to a pack being built: give --build-pack PAIRS too")
    if args.build_pack:
        from models.training.data import real_pairs, synthetic_pairs, unlabeled_pairs, write_pack

        pairs = real_pairs(Path(args.build_pack), "train") + synthetic_pairs(args.synthetic, 384)
        if args.unlabeled:
            pairs += unlabeled_pairs(Path(args.unlabeled))
        digest = write_pack(pairs, Path(cfg.pack))
        print(f"wrote {cfg.pack}: {len(pairs)} pairs, sha256 {digest}")
    cfg = apply_variant(cfg, args.variant)
    if args.budget_s:
        cfg = with_budget(cfg, args.budget_s)
    from models.training.trainer import Trainer

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / f"{cfg.name}.log", "a")

    def log(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {cfg.name}: {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    trainer = Trainer(cfg, log=log)
    meta = trainer.run(resume=not args.no_resume)
    if args.throughput:
        from models.training.throughput import seconds_per_megapixel

        speed = {"s_per_mp_fp32": seconds_per_megapixel(trainer.model, trainer.device)}
        if trainer.device.type == "cuda":
            speed["s_per_mp_bf16"] = seconds_per_megapixel(trainer.model, trainer.device, bf16=True)
            import torch

            speed["gpu"] = torch.cuda.get_device_name(0)
        log(f"throughput {json.dumps(speed)}")
        meta = trainer.export({"throughput": speed})
        trainer.report(meta)
    log(f"weights {out / meta['file']} sha256 {meta['sha256']} ({meta['bytes']} bytes); report {out / 'report.md'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training", description="Train DS-MAR.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return train(args)
    except DsmarError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
