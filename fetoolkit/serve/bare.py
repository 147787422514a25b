"""A framework-free ASGI app that embeds aligned crops: the reference point of ``make bench-serve``.

For ``POST /api/extract-embedding`` with an aligned crop it does only what any Python HTTP
embedding service has to do: parse the JSON body, base64-decode, decode the image
(``decode_image``), run the model (``create_embedder``: the service's ONNX file and session
options), L2-normalise and answer JSON. There is no FastAPI, no validation, no typed errors, no
admission control, no detection and no quality score. uvicorn serves it as it serves the service
(httptools, uvloop), with the model on ``--workers`` threads.

Its requests/s over raw onnxruntime's faces/s is about as high a fraction as a Python ASGI server
reaches for the model on the machine; ``bench_serve`` measures it in the same run as the service
and reads the service's own fraction against it. Not a service: a bad request gets a bare 400.

    python -m fetoolkit.serve.bare --model arcface [--weights PATH] [--port 8003] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.types import Receive, Scope, Send

from fetoolkit.backends.common import l2_normalize
from fetoolkit.imageio import decode_image
from fetoolkit.serve.process import HOST


class BareEmbeddingApp:
    """ASGI app: ``POST /api/extract-embedding`` (aligned crops) and ``GET /api/health``.

    Args:
        embedder: anything with ``embed_raw``: uint8 RGB ``[N, H, W, 3]`` -> float32 ``[N, D]``.
        workers: threads running decoding and the model.
    """

    def __init__(self, embedder: Any, workers: int) -> None:
        self.embedder = embedder
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bare")

    def embed(self, body: bytes) -> bytes:
        """JSON body ``{"image": <base64 aligned crop>}`` -> JSON ``{"success": true, "embedding": [...]}``."""
        image = decode_image(base64.b64decode(json.loads(body)["image"]))
        emb = l2_normalize(self.embedder.embed_raw(image[None]))[0]
        return json.dumps({"success": True, "embedding": emb.tolist()}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            self.pool.shutdown(wait=False, cancel_futures=True)
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        status, out = 200, b'{"status": "healthy"}'
        if scope["method"] == "POST" and scope["path"] == "/api/extract-embedding":
            try:
                out = await asyncio.get_running_loop().run_in_executor(self.pool, self.embed, b"".join(chunks))
            except Exception as e:  # a reference point, not a service: no error kinds
                status, out = 400, json.dumps({"success": False, "message": f"{type(e).__name__}: {e}"}).encode()
        elif scope["path"] != "/api/health":
            status, out = 404, b'{"success": false}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": out})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from fetoolkit.models.factory import create_embedder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="arcface")
    parser.add_argument("--weights", default=os.environ.get("MODEL_PATH") or None)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8003")))
    parser.add_argument("--workers", type=int, default=2, help="threads running the model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    embedder = create_embedder(
        args.model, weights=args.weights, backend="onnx", num_threads=1, export_in_subprocess=True
    )
    uvicorn.run(
        BareEmbeddingApp(embedder, args.workers),
        host=HOST,
        port=args.port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
