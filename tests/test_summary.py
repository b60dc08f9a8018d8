"""The lines a run prints at its end (dgm_runner.cli.summary.run_summary)."""

from __future__ import annotations

from dgm_runner.cli.summary import run_summary


def test_the_summary_names_the_run_its_metrics_the_fid_reference_and_the_grid(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "outputs" / "vae_bce" / "t0"
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "samples" / "final.png").write_bytes(b"png")
    final = {
        "status": "completed",
        "epoch": 20,
        "monitor": "test/elbo_loss",
        "test/elbo_loss": 86.8123,
        "test/elbo": -86.8123,
        "test/nll_iwae_k1000": 80.52,
        "test/recon": 56.8,  # not a headline metric
        "test/fid": 283.9,
        "test/fid_n_samples": 10000.0,
        "test/fid_n_real": 10000.0,
        "test/fid_reference_binarized": 0.0,
        "test/fid_classifier_shipped": 1.0,
        "train/elbo": -80.0,
    }
    lines = run_summary(run_dir, final).splitlines()
    assert lines[0] == "run completed after 20 epochs: outputs/vae_bce/t0"
    assert lines[1] == "  monitored test/elbo_loss = 86.8123"
    assert lines[2] == "  test: elbo -86.8123, nll_iwae_k1000 80.52, fid 283.9"
    assert lines[3] == (
        "  FID/KID: 10000 samples vs 10000 grey test images, features of the shipped classifier"
    )
    assert lines[4] == "  samples: outputs/vae_bce/t0/samples/final.png"
    colour = {**final, "test/fid_reference_channels": 3.0, "test/inception_fid": 12.5}
    lines = run_summary(run_dir, colour).splitlines()
    assert lines[2] == "  test: elbo -86.8123, nll_iwae_k1000 80.52, fid 283.9, inception_fid 12.5"
    assert "vs 10000 colour test images" in lines[3]


def test_a_run_outside_the_working_directory_is_shown_absolute_and_without_a_grid(
    tmp_path, monkeypatch
):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    run_dir = tmp_path / "elsewhere"
    final = {"status": "interrupted", "epoch": 3, "monitor": "test/loss"}
    assert run_summary(run_dir, final) == f"run interrupted after 3 epochs: {run_dir.resolve()}"
