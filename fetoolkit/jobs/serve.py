"""``python -m fetoolkit.serve model=arcface``: run the embedding service (Hydra main).

Reads ``configs/serve.yaml``; ``PORT``, ``HOST``, ``MODEL_PATH``, ``LOG_LEVEL``,
``MAX_CONCURRENT_REQUESTS``, ``ALLOWED_HOSTS``, ``PROFILE_PATH`` and ``PROFILE_ALLOW_MISMATCH`` override
it; ``API_KEYS`` / ``API_KEYS_FILE`` turn on key checking. A decision profile made for another set-up
stops the start (exit 2). Serves until SIGINT / SIGTERM.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fetoolkit.cli_args import USER_ERRORS, hydra_job, user_error_exit
from fetoolkit.serve.settings import ServeSettings, is_loopback

log = logging.getLogger("fetoolkit.serve")


def run(cfg: DictConfig) -> None:
    """Build the settings and the app from ``cfg`` and serve with uvicorn (blocks)."""
    import uvicorn

    from fetoolkit.serve.app import create_app
    from fetoolkit.serve.memory import tune_malloc
    from fetoolkit.serve.protocol import guarded_protocol

    settings = ServeSettings.from_cfg(cfg)
    tune_malloc(settings.malloc_arena_max, settings.malloc_mmap_threshold, settings.malloc_trim_threshold)
    logging.getLogger().setLevel(settings.log_level.upper())
    logging.getLogger("fetoolkit").setLevel(settings.log_level.upper())
    # Pillow logs image metadata (EXIF tags, chunk names) at debug level: never in this log.
    logging.getLogger("PIL").setLevel(max(logging.INFO, logging.getLogger().level))
    warn_exposure(settings)
    app = create_app(settings)
    # log_config=None keeps Hydra's logging (console + the run directory's log file).
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the front door logs each request (server.access_log), with its request id
        log_config=None,
        timeout_graceful_shutdown=5,
        http=guarded_protocol(header_timeout_s=settings.header_timeout_s, max_header_bytes=settings.max_header_bytes),
        timeout_keep_alive=max(1, round(settings.keepalive_timeout_s)),
        limit_concurrency=settings.max_connections,
        server_header=False,
    )


def warn_exposure(settings: ServeSettings) -> None:
    """Warn when the service is reachable from other machines without keys or a host list."""
    if is_loopback(settings.host):
        return
    if not settings.auth_required:
        log.warning(
            "listening on %s without API keys: anyone who reaches this port can use the service; set API_KEYS "
            "(comma-separated) or API_KEYS_FILE",
            settings.host,
        )
    if settings.hosts is None:
        log.warning(
            "listening on %s and answering any Host header; set ALLOWED_HOSTS (comma-separated names) to the "
            "names clients use",
            settings.host,
        )


@hydra.main(version_base="1.3", config_path="../../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    log.info("run directory: %s", out_dir)
    try:
        run(cfg)
    except USER_ERRORS as e:  # bad settings or environment (a model that fails to load is served as such)
        user_error_exit(e)


if __name__ == "__main__":
    hydra_job(main, "serve")
