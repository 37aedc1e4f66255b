"""Throughput, latency, flat-cost, admin and memory benchmarks of morph_webhooks (see run.py)."""
