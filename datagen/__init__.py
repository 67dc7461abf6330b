"""Data generators and readers for tests, training, benchmarks and the demo: synthetic scenes, the
synthetic demo archive, the real benchmark pairs and their warps.
"""
