"""The kernel: errors, contracts, warp and field maths, and the validated run configuration.

The bottom layer: it imports nothing of catalogs, pipeline, models, flows or the CLI.
"""
