"""DS-MAR training: a data pack of aligned pairs, GPU-side warps and augmentation, a multi-stage trainer."""
