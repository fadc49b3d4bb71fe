"""Measuring steps on a device: the step profiler (profiler, profile_shapes, synthetic_batch,
kv_pool, tp_kv_pool), the step timer, device floors and the analytic step cost used by the
benchmarks. Nothing in the serving engine imports this package."""
