"""``logger=mlflow``: the run as a run of an MLflow experiment (extra ``dgm-runner[mlflow]``).

What is written where (all through :class:`mlflow.tracking.MlflowClient`, with explicit run
ids: no global ``mlflow.start_run`` state):

* the tracking store: ``logger.tracking_uri``, else the store a resumed run was recorded in,
  else ``$MLFLOW_TRACKING_URI``, else the local file store ``./mlruns`` of the directory the
  command was launched from (``file:<cwd>/mlruns``; MLflow >= 3 refuses file stores unless
  ``MLFLOW_ALLOW_FILE_STORE=true``, which this logger sets for ``file:`` URIs when unset);
* the experiment: ``logger.experiment``, else ``experiment_name`` (created when missing), so
  every job of a sweep is a run of one experiment, tagged ``sweep=multirun/<name>/<time>``;
* the run: named after the run directory (:func:`dgm_runner.io.loggers.run_name`), tagged
  with ``run_dir`` (its absolute path); its id is kept in ``<run_dir>/mlflow_run.json``,
  and a resumed run (same ``run_dir``) reopens that run, so its metric histories go on;
* metrics: every :meth:`~MLflowLogger.scalars` call at its step (tags made MLflow-safe by
  :func:`metric_key`), and the final test metrics as ``final/<tag>`` at the last step;
* params: the resolved config flattened to dotted keys (``model.latent_dim``), values cut to
  MLflow's length limit; a resumed run adds new keys only (MLflow refuses to change a
  param: ``trainer.epochs`` keeps its first value there, ``config.yaml`` has the new one);
* artifacts: ``config.yaml`` (the resolved config, rewritten by a resumed run) and
  ``samples/step_<step>.png`` (each evaluation's grid);
* status: ``FINISHED`` when the run completed (or the logger was closed without an error),
  ``KILLED`` after a stop signal, ``FAILED`` after any other error; a resumed run is
  ``RUNNING`` again until it ends.

Every call to the store returns within ``logger.timeout_s`` seconds (:class:`BoundedClient`):
MLflow's own HTTP retries (7, with a backoff of minutes, by default) are cut to a few short
ones inside that window, and a store that has not answered by then (unreachable, hung) is
a ``TimeoutError``. The loop's :class:`~dgm_runner.io.loggers.GuardedLogger` turns that, and
any other failure of the store (read-only, full), into one warning line and a disabled
logger: training goes on. A store that cannot be reached or written when the run starts is
no error either (the run waits at most ``timeout_s``, warns once and trains without
MLflow): an unreachable server is often a passing state, and telling it from a wrong URI
before any work would cost the same wait. A stop signal during the wait stops the run as
at any other point.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from dgm_runner.config import PositiveFloat
from dgm_runner.io.atomic import write_json
from dgm_runner.io.layout import RunPaths
from dgm_runner.io.loggers import (
    NullLogger,
    closing_outcome,
    grid_to_uint8,
    run_name,
    sweep_group,
)

log = logging.getLogger("dgm_runner")

_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
_KEY_LEN = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
_THREAD = "dgm-mlflow"  # the name of the threads that call the store

#: MLflow's HTTP retry settings for the calls of this logger (each read by MLflow when a
#: request starts), unless set in the environment: 2 retries, 0 s and 2 s apart.
_HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
_env_lock = threading.Lock()
_env_users = 0
_env_set: list[str] = []  # the variables _http_limits set (and removes again)


@contextlib.contextmanager
def _http_limits(timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP settings for one call of this logger: :data:`_HTTP_RETRIES`, and each
    request's timeout at ``timeout_s`` (``MLFLOW_HTTP_REQUEST_TIMEOUT``, default 120 s),
    unless the environment sets them; restored when the last call that set them returns
    (calls may overlap: one abandoned after its timeout still runs)."""
    global _env_users
    wanted = {**_HTTP_RETRIES, "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s)))}
    with _env_lock:
        if _env_users == 0:
            _env_set[:] = [key for key in wanted if key not in os.environ]
            os.environ.update({key: wanted[key] for key in _env_set})
        _env_users += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                for key in _env_set:
                    os.environ.pop(key, None)


class _NoRetryNoise(logging.Filter):
    """Drop urllib3's "Retrying (...)" warnings of this logger's calls: a store that does
    not answer is reported once, by the loop's guard."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith(_THREAD)


logging.getLogger("urllib3.connectionpool").addFilter(_NoRetryNoise())


class BoundedClient:
    """An :class:`mlflow.tracking.MlflowClient` whose every method call returns within
    ``timeout_s`` seconds: the call runs in a daemon thread (with MLflow's HTTP retries
    bounded, :func:`_http_limits`) and the caller waits at most ``timeout_s`` for it. The
    wait is interruptible: a stop signal raises in the caller at once, never inside MLflow
    (which would turn it into an ``MlflowException``). A call still running at the deadline
    is abandoned (its thread ends when MLflow gives up; a daemon thread never holds up the
    exit of the process).

    Args:
        client: the MLflow client; timeout_s: the most seconds one call may take;
        uri: the tracking URI, for messages.
    """

    def __init__(self, client: Any, timeout_s: float, uri: str) -> None:
        self.client, self.timeout_s, self.uri = client, timeout_s, uri

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self.client, attr)
        if not callable(method):
            return method
        return functools.partial(self.call, attr, method)

    def call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)``, waited for at most ``timeout_s`` seconds.

        Raises:
            TimeoutError: the store did not answer within ``timeout_s``.
            Exception: what ``method`` raised.
        """
        outcome: dict[str, Any] = {}

        def run() -> None:
            with _http_limits(self.timeout_s):
                try:
                    outcome["value"] = method(*args, **kwargs)
                except BaseException as err:  # noqa: BLE001 - handed to the caller
                    outcome["error"] = err

        thread = threading.Thread(target=run, name=f"{_THREAD}-{what}", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            raise TimeoutError(
                f"the MLflow store {self.uri} did not answer {what} within "
                f"logger.timeout_s={self.timeout_s:g} s"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def metric_key(tag: str) -> str:
    """``tag`` as an MLflow metric or param name: characters other than letters, digits,
    ``_ - . /`` and spaces become ``_``; empty, ``.`` and ``..`` path parts are dropped (MLflow
    refuses names that are not normalised paths); at most 250 characters."""
    parts = re.sub(r"[^\w.\- /]", "_", tag).split("/")
    key = "/".join(p for p in parts if p not in ("", ".", ".."))
    return key[:_KEY_LEN] or "_"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model.latent_dim": "20", ...}``: every leaf of a nested dict as a string (lists as
    JSON), keyed by its dotted path."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, dict)):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = str(value)
    return out


class MLflowLogger(NullLogger):
    """Log the run to MLflow (``logger=mlflow``); see the module docstring for what goes where.

    Args:
        run_dir, config: set by the runner.
        tracking_uri: an MLflow tracking URI (``file:/path/mlruns``, ``sqlite:///mlflow.db``,
            ``http://host:5000``, ...); None: the store a resumed run used, else
            ``$MLFLOW_TRACKING_URI``, else ``file:<cwd>/mlruns``.
        experiment: the MLflow experiment; None: ``config["experiment_name"]``.
        timeout_s: the most seconds one call to the store may take, MLflow's HTTP retries
            included (:class:`BoundedClient`).

    Raises:
        ConfigError: MLflow is not installed (``pip install 'dgm-runner[mlflow]'``).
        WriteError: ``mlflow_run.json`` could not be written.
        TimeoutError: the store did not answer within ``timeout_s`` (also from any method).
        mlflow.exceptions.MlflowException: the store refused the experiment or run.
    """

    name = "mlflow"
    requires = ("mlflow", "mlflow")

    def __init__(
        self,
        run_dir: str | Path | None = None,
        config: dict[str, Any] | None = None,
        tracking_uri: Optional[str] = None,
        experiment: Optional[str] = None,
        timeout_s: PositiveFloat = 30.0,
    ) -> None:
        super().__init__(run_dir, config)  # ConfigError when mlflow is not installed
        from mlflow.tracking import MlflowClient

        stored = self.stored_run(RunPaths.MLFLOW_RUN)
        self.tracking_uri = (
            tracking_uri
            or (stored or {}).get("tracking_uri")
            or os.environ.get("MLFLOW_TRACKING_URI")
            or (Path.cwd() / "mlruns").resolve().as_uri()
        )
        if self.tracking_uri.startswith("file:") or "://" not in self.tracking_uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3 needs it
        self.client = BoundedClient(MlflowClient(self.tracking_uri), timeout_s, self.tracking_uri)
        self.run_id = self._reopen(stored) if stored else None
        if self.run_id is None:
            self.run_id = self._create(experiment or self.config.get("experiment_name"))
        self._last_step = 0
        self._completed = False
        self._closed = False
        self._log_config()

    def _reopen(self, stored: dict[str, Any]) -> str | None:
        """The stored run, set RUNNING again; None when this store does not have it."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(stored["run_id"])
        except MlflowException:
            log.warning(
                "MLflow run %s of %s is not in %s: starting a new run",
                stored["run_id"],
                RunPaths(self.run_dir).mlflow_run,
                self.tracking_uri,
            )
            return None
        self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def _create(self, experiment: str | None) -> str:
        """A new run in ``experiment`` (created if missing), recorded in ``mlflow_run.json``."""
        from mlflow.exceptions import MlflowException

        name = experiment or "dgm_runner"
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(name)
            except MlflowException:  # another job of the sweep created it meanwhile
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = found.experiment_id
        tags = {"run_dir": str(self.run_dir.resolve())}
        group = sweep_group(self.run_dir)
        if group:
            tags["sweep"] = group
        run = self.client.create_run(experiment_id, run_name=run_name(self.run_dir), tags=tags)
        write_json(
            RunPaths(self.run_dir).mlflow_run,
            {
                "run_id": run.info.run_id,
                "experiment_id": experiment_id,
                "tracking_uri": self.tracking_uri,
            },
        )
        return run.info.run_id

    def _log_config(self) -> None:
        """``config.yaml`` and the flattened config as params (new keys only)."""
        from mlflow.entities import Param
        from omegaconf import OmegaConf

        try:
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH as max_len
        except ImportError:  # pragma: no cover - older MLflow
            max_len = 500
        self.client.log_text(self.run_id, OmegaConf.to_yaml(self.config), "config.yaml")
        logged = self.client.get_run(self.run_id).data.params
        params = {}
        for key, value in flatten(self.config).items():
            key = metric_key(key)
            if key not in logged and key not in params:
                params[key] = value[:max_len]
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's MAX_PARAMS_TAGS_PER_BATCH
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log ``{tag: value}`` as MLflow metrics at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(k), float(v), now, int(step)) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow's MAX_METRICS_PER_BATCH
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self._last_step = max(self._last_step, int(step))

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """Log the grid as the PNG artifact ``<tag>/step_<step:06d>.png``."""
        self.client.log_image(
            self.run_id, grid_to_uint8(grid), artifact_file=f"{tag}/step_{int(step):06d}.png"
        )

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Log the final metrics as ``final/<tag>`` at the last step seen (the params are
        logged from the whole config when the run starts)."""
        self.scalars({f"final/{k}": v for k, v in metrics.items()}, self._last_step)
        self._completed = True

    def close(self) -> None:
        """End the run: FINISHED, KILLED (stop signal) or FAILED (another error propagating
        through the loop's ``finally``); a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.client.set_terminated(self.run_id, _STATUS[closing_outcome(self._completed)])
