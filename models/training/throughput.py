"""Inference speed of a DS-MAR network in seconds per megapixel, timed after warm-up."""

from __future__ import annotations

import time

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


def main(argv=None) -> int:
    """`python -m models.training.throughput WEIGHTS [--size N]`: print s/MP (fp32, bf16 on CUDA) as JSON."""
    import argparse
    import json
    from pathlib import Path

    from models.dsmar.weights import load_weights

    parser = argparse.ArgumentParser(prog="python -m models.training.throughput")
    parser.add_argument("weights")
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    model, meta = load_weights(Path(args.weights))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = {
        "weights_sha256": meta["sha256"],
        "size": args.size,
        "device": str(device),
        "s_per_mp_fp32": seconds_per_megapixel(model, device, args.size),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
        result["s_per_mp_bf16"] = seconds_per_megapixel(model, device, args.size, bf16=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
