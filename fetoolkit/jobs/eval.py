"""The eval job: ``python -m fetoolkit.eval`` (= ``python -m fetoolkit.jobs.eval``); see :mod:`fetoolkit.eval_run`."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fetoolkit.cli_args import USER_ERRORS, hydra_job, user_error_exit
from fetoolkit.eval_run import run
from fetoolkit.evaluate import EnrolmentError
from fetoolkit.results import WriteError

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../../configs", config_name="eval")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, out_dir)
    except (*USER_ERRORS, EnrolmentError, WriteError) as e:  # bad data, paths, weights, folds, a full disk:
        user_error_exit(e)  # one line naming the file and the fix (the figures were logged before a write)
    log.info("wrote %s", out_dir / "results.json")


if __name__ == "__main__":
    hydra_job(main, "eval")
