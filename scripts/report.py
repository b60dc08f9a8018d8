"""Build outputs/REPORT.md from run directories (same as `dgm-report`).

Usage: python scripts/report.py [ROOT ...] [--out outputs/REPORT.md]
"""

from dgm_runner.cli.report import main

if __name__ == "__main__":
    main()
