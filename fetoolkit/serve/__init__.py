"""The HTTP embedding service: ``python -m fetoolkit.serve model=arcface``.

``create_app(settings)`` builds the FastAPI app; ``ServeSettings.from_cfg(cfg)`` reads
``configs/serve.yaml`` plus the environment (``PORT``, ``HOST``, ``MODEL_PATH``, ``LOG_LEVEL``,
``MAX_CONCURRENT_REQUESTS``, ``PROFILE_PATH``: a decision profile, :mod:`fetoolkit.serve.decide`).
See the README's "Service" section for the API.
"""

from fetoolkit.serve.app import create_app
from fetoolkit.serve.service import EmbeddingService
from fetoolkit.serve.settings import ServeSettings

__all__ = ["EmbeddingService", "ServeSettings", "create_app"]
