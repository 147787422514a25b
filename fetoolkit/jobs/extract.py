"""The extract job: ``python -m fetoolkit.extract`` (= ``python -m fetoolkit.jobs.extract``); see
:mod:`fetoolkit.extract_run`.

    python -m fetoolkit.extract model=arcface dataset=orl store=stores/orl-arcface
    python -m fetoolkit.extract model=arcface images=/data/photos store=DIR engine=ray ray.address=auto
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fetoolkit.cli_args import USER_ERRORS, hydra_job, user_error_exit
from fetoolkit.extract_run import run
from fetoolkit.jsonutil import jsonable

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../../configs", config_name="extract")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    try:
        summary = run(cfg)
    except USER_ERRORS as e:  # a store made otherwise, bad paths or settings: one line and the fix
        user_error_exit(e)
    (out_dir / "extract.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    log.info(
        "store %s: %d of %d images (%d did not enrol)",
        summary["store"],
        summary["n_done"],
        summary["n_images"],
        summary["n_failed"],
    )


if __name__ == "__main__":
    hydra_job(main, "extract")
