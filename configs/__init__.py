"""The Hydra config tree, installed inside the package as ``dgm_runner.configs``
(pyproject.toml maps this folder there); ``dgm_runner.CONFIG_DIR`` is its location."""
