#!/usr/bin/env python3
"""Both stages of the VQ-VAE experiment with one command: the ``dgm-vqvae`` console script
(``dgm_runner/cli/vqvae.py``), kept here for existing command lines."""

import sys

from dgm_runner.cli.vqvae import main

if __name__ == "__main__":
    sys.exit(main())
