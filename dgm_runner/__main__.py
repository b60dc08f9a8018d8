"""``python -m dgm_runner`` is ``dgm-train``."""

from dgm_runner.cli.train import main

if __name__ == "__main__":
    main()
