"""``python -m dgm_runner`` is ``dgm-train``."""

from dgm_runner.run import main

if __name__ == "__main__":
    main()
