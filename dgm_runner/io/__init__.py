"""Everything that touches the disk: checkpoints, metrics, grids, TensorBoard, summaries."""
