"""``python -m fetoolkit.serve model=arcface``: run the embedding service (Hydra main).

Reads ``configs/serve.yaml``; ``PORT``, ``HOST``, ``MODEL_PATH``, ``LOG_LEVEL`` and
``MAX_CONCURRENT_REQUESTS`` override it. Serves until SIGINT / SIGTERM.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fetoolkit.serve.settings import ServeSettings

log = logging.getLogger("fetoolkit.serve")


def run(cfg: DictConfig) -> None:
    """Build the settings and the app from ``cfg`` and serve with uvicorn (blocks)."""
    import uvicorn

    from fetoolkit.serve.app import create_app
    from fetoolkit.serve.memory import tune_malloc

    settings = ServeSettings.from_cfg(cfg)
    tune_malloc(settings.malloc_arena_max, settings.malloc_mmap_threshold)
    logging.getLogger().setLevel(settings.log_level.upper())
    logging.getLogger("fetoolkit").setLevel(settings.log_level.upper())
    app = create_app(settings)
    # log_config=None keeps Hydra's logging (console + the run directory's log file).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=5,
    )


@hydra.main(version_base="1.3", config_path="../../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    log.info("run directory: %s", out_dir)
    run(cfg)


if __name__ == "__main__":
    main()
