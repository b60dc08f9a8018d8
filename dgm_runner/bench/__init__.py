"""``make bench`` (``scripts/bench.py``): how fast is the runner's training epoch against
the obvious baselines?

Issue 8. Every timing is taken in this one process, the contenders of a group
interleaved (A B A B ...), so that a machine shared with other jobs slows all of them
alike; the table reports medians (seconds), min/max and the ratio baseline / ours, each
baseline measured in the same run as ours.

Groups (ours = :func:`dgm_runner.loop.train`, one epoch, its ``train/epoch_time_s``):

* ``vae1`` (experiment=vae_mlp), ``vae2`` (vae_cnn), ``vae_bce`` (vae_bce) against the
  same ``nn.Module`` trained in a torchvision ``DataLoader`` loop (``ToTensor``,
  ``num_workers=0``, default Adam, ``loss.item()`` every step: pytorch/examples' VAE);
  ``vae1`` also times ours with ``trainer.precision=bf16`` (``ours_bf16``).
* ``rbm_cd1`` / ``rbm_cd25`` (experiment=rbm_cdk, objective.k=1 / 25) against
  scikit-learn's ``BernoulliRBM`` (PCD-1, float32, CD-1 only), learnergy's
  ``bernoulli.RBM`` (when importable) and a plain in-memory PyTorch loop with
  ``torch.bernoulli`` and a hand-written gradient.

Also: the matmul-only time of our step (the compute bound: the step's GEMMs replayed
alone, plus its convolution kernel time), ``trainer.compile`` (first-epoch cost against
the per-epoch gain), scaling (CD-k in k, VAE1 in N_z, time in the dataset size), peak
RSS per experiment (a subprocess each), and sampling (RBM Gibbs chains, VAE ancestral
samples, the predictor-corrector sampler) against plain loops. Targets the issue sets
are checked; a missed one is explained with a torch.profiler table of our step.

Modules, one job each:

* :mod:`.harness`: the shared state of a run (:class:`~.harness.Bench`) and our epoch;
* :mod:`.timing`: timing helpers and the interleaved groups with their (paired) ratios;
* :mod:`.baselines`: the reference implementations ours is compared with;
* :mod:`.groups`, :mod:`.bound`, :mod:`.compile_cost`, :mod:`.scaling`, :mod:`.rss`,
  :mod:`.sampling`: the measured sections; :mod:`.unet` (``--only unet``, issue 30): updates
  per second of our score U-Net step against a plain PyTorch loop and diffusers'
  ``UNet2DModel`` of about the same parameter count;
* :mod:`.report`: the targets' verdicts, the printed tables and ``bench.md``;
* :mod:`.suite`: one whole run (the sections asked for, then ``bench.json``).

Run ``scripts/bench.py --quick`` (subsets, 3 repeats: a few minutes) or the full run
(``make bench``: full epochs for the target pairs; about 10 minutes on a quiet 2-core
CPU). On a machine shared with other jobs add ``--threads 1``: torch's two-thread
kernels then stall on the busy cores (5-15x slower epochs were seen), single-threaded
ones do not. ``--only`` picks sections and ``--merge`` adds them to an existing JSON.
Results: a printed table and ``bench.json``. On CUDA the groups also report images/s
and peak GPU memory.

(This ``__init__`` imports nothing: :mod:`.rss` runs as ``python -m
dgm_runner.bench.rss`` in its subprocesses.)
"""
