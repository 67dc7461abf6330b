"""The accuracy benchmark on real multimodal pairs (../shared/data/pairs): data, warps, metrics, runner."""
