"""Inference speed of DS-MAR in seconds per megapixel, timed after warm-up: the network's forward pass alone; the
whole method with its defaults, from the pair in host memory to its field and confidence there (network, trend,
window passes, Gauss-Newton steps and every transfer); and `register_pair(method="dsmar")`, which adds the API's
checks and its warp of the moving image on the CPU (the pipeline warps in tasks of its own)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from models.dsmar.network import DSMAR


@torch.no_grad()
def seconds_per_megapixel(
    model: DSMAR, device: torch.device, size: int = 1024, repeats: int = 10, bf16: bool = False
) -> float:
    """Median time of one forward pass on a (size x size) pair, divided by its megapixels."""
    model = model.eval().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(1, 2, size, size, device=device, generator=gen) * 2 - 1
    x[:, 1] = 1.0
    y = torch.roll(x, shifts=(3, -2), dims=(2, 3))
    ids = torch.zeros(1, dtype=torch.long, device=device)
    enabled = bf16 and device.type == "cuda"
    times = []
    for i in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
            model(x, y, ids, ids)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] / (size * size / 1e6)


def method_seconds_per_megapixel(
    weights: Path, device: torch.device, size: int = 1024, repeats: int = 3
) -> tuple[float, float]:
    """Median times of the `dsmar` method with its defaults on `device`, and of `register_pair(method="dsmar")`, on a
    (size x size) synthetic optical-SAR scene whose SAR is shifted by (3, -2) px, divided by its megapixels.

    A rendered scene, not noise: the method's trend and window passes do the work they do on real ground."""
    from models.api import register_pair
    from models.methods.dsmar import make_dsmar

    fixed, moving = rendered_pair(size)
    method = make_dsmar()
    runs = (
        lambda: method(
            fixed, moving, fixed_modality="optical", moving_modality="sar", weights=str(weights), device=str(device)
        ),
        lambda: register_pair(
            fixed, moving, "optical", "sar", method="dsmar", weights=str(weights), device=str(device)
        ),
    )
    medians = []
    for run in runs:
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            run()
            if i >= 1:
                times.append(time.perf_counter() - start)
        medians.append(sorted(times)[len(times) // 2] / (size * size / 1e6))
    return medians[0], medians[1]


def rendered_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A (size x size) synthetic optical-SAR scene whose SAR is shifted by (3, -2) px: (fixed, moving)."""
    from datagen.synthetic import render_scene

    scene = render_scene((size + 8, size + 8), np.random.default_rng(0))
    fixed = np.ascontiguousarray(scene.optical[:, 4 : 4 + size, 4 : 4 + size], np.float32)
    moving = np.ascontiguousarray(scene.sar[:, 7 : 7 + size, 2 : 2 + size], np.float32)
    return fixed, moving


def device_agreement(weights: Path, device: torch.device, size: int = 1024) -> dict[str, float]:
    """How far the method's field on `device` lies from its field on the CPU, on `rendered_pair`: the median and
    99th percentile of the vectors' difference (px). The same steps in another device's arithmetic; a GPU window
    reports it beside the speed, so a device path that computed something else shows. TF32 is off for both runs."""
    from models.methods.dsmar import make_dsmar

    fixed, moving = rendered_pair(size)
    method = make_dsmar()
    options = {"fixed_modality": "optical", "moving_modality": "sar", "weights": str(weights)}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    # TF32 convolutions alone move a GPU's field; off, what remains is the path's own difference.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        fields = [method(fixed, moving, device=str(d), **options)[0] for d in (device, torch.device("cpu"))]
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    gap = np.hypot(*(fields[0] - fields[1]))
    return {"median_px": float(np.nanmedian(gap)), "p99_px": float(np.nanpercentile(gap, 99))}


def main(argv=None) -> int:
    """`python -m models.training.throughput WEIGHTS [--size N] [--record]`: print the network's s/MP (fp32, bf16 on
    CUDA), the whole method's (s/MP and MP/s) and `register_pair`'s (s/MP) as JSON, on CUDA with the method's field
    against the CPU's (`device_agreement`); `--record` (on a GPU) also writes them into the weights'
    sidecar as `gpu_throughput`, which the accuracy report shows next to the baselines."""
    import argparse
    import json
    import sys

    from models.dsmar.weights import load_weights, write_sidecar

    parser = argparse.ArgumentParser(prog="python -m models.training.throughput")
    parser.add_argument("weights")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--record", action="store_true", help="write the GPU speed into the weights' sidecar")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.record and device.type != "cuda":
        print("throughput: error: --record writes a GPU speed, and no GPU is visible here", file=sys.stderr)
        return 2
    model, meta = load_weights(Path(args.weights))
    result = {
        "weights_sha256": meta["sha256"],
        "size": args.size,
        "device": str(device),
        "s_per_mp_fp32": seconds_per_megapixel(model, device, args.size),
    }
    method, api = method_seconds_per_megapixel(Path(args.weights), device, args.size)
    result.update(method_s_per_mp=method, method_mp_per_s=1.0 / method, register_pair_s_per_mp=api)
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
        result["s_per_mp_bf16"] = seconds_per_megapixel(model, device, args.size, bf16=True)
        result["field_vs_cpu"] = device_agreement(Path(args.weights), device, args.size)
    if args.record:
        write_sidecar(Path(args.weights), {"gpu_throughput": result})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
