"""Sample-based metrics, run at each evaluation (``sample_metrics:`` in a config)."""
