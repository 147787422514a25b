"""Request bodies -> what the routes need, for the three ways a client can send images.

* ``application/json`` (the original design's API): validated from the bytes by the route's
  pydantic model in JSON mode and strict (``aligned`` must be a JSON ``true``/``false``); fields
  the schema does not name are skipped by the parser, not built as Python objects (16 MiB of
  padding cost 0.35 s and no memory this way, against 0.55 s and +400 MB through ``json.loads``).
* ``multipart/form-data`` (``curl -F image=@photo.jpg``): the same field names; file parts are the
  image files themselves, text parts base64 (images) or ``true``/``false`` / numbers.
* a raw image body (``curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg'``, or
  ``application/octet-stream``) on ``/api/extract-embedding``, with ``?aligned=true`` /
  ``?all_faces=true`` in the query.

Every parser runs in a pool thread (never on the event loop) on the body the front door already
read whole and bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from python_multipart import create_form_parser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import Field, File

from fetoolkit.serve.errors import InvalidInput, MalformedJSON, ServiceError, UnsupportedMediaType
from fetoolkit.serve.schemas import BatchRequest, ExtractRequest, ImageInput, VerifyRequest
from fetoolkit.serve.settings import MAX_BATCH_IMAGES

RAW_TYPES = ("image/", "application/octet-stream")
MAX_PARTS = MAX_BATCH_IMAGES + 8
# python-multipart logs a warning for every malformed body: a client could flood the log with them
logging.getLogger("python_multipart").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Parsed:
    """A request's images and flags, whatever the body's encoding.

    Attributes:
        images: the images in order (1 for extract, 2 for verify, 1..32 for batch).
        aligned: the images are aligned crops.
        all_faces: embed every face found.
        threshold: verify only: the request's own decision threshold (None: the server's).
        fmr: verify only: the FMR target of the decision profile's threshold (None: the server's).
        prior: verify only: the prior of ``p_same`` (None: the profile's).
    """

    images: list[ImageInput]
    aligned: bool = False
    all_faces: bool = False
    threshold: float | None = None
    fmr: float | None = None
    prior: float | None = None


_MODELS: dict[str, type[BaseModel]] = {"extract": ExtractRequest, "verify": VerifyRequest, "batch": BatchRequest}
_IMAGE_FIELDS = {"extract": ("image",), "verify": ("image1", "image2"), "batch": ("images",)}
_FLAGS = {
    "extract": ("aligned", "all_faces"),
    "verify": ("aligned", "threshold", "fmr", "prior"),
    "batch": ("aligned", "all_faces"),
}
#: Numeric flags (verify): name -> (lowest, highest, whether the bounds are allowed, what it is).
_NUMBERS = {
    "threshold": (-1.0, 1.0, True, "a cosine"),
    "fmr": (0.0, 1.0, False, "a false match rate"),
    "prior": (0.0, 1.0, False, "a probability"),
}


def parse_body(route: str, content_type: str, body: bytes, query: Mapping[str, str]) -> Parsed:
    """Parse one route's body (``route``: ``extract``, ``verify`` or ``batch``).

    Raises:
        ServiceError: 415 for a content type the route does not take, 400 for a body that is not
            JSON / not multipart, 422 for one that does not fit the schema.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return _from_model(route, _validate_json(_MODELS[route], body))
    if media == "multipart/form-data":
        return _from_form(route, content_type, body)
    if route == "extract" and media.startswith(RAW_TYPES):
        flags = {k: _flag(k, v) for k, v in query.items() if k in _FLAGS["extract"]}
        unknown = sorted(set(query) - set(_FLAGS["extract"]))
        if unknown:
            raise InvalidInput(f"unknown query parameter(s) {unknown}; this route takes aligned and all_faces")
        return Parsed([body], **flags)
    takes = "application/json or multipart/form-data" + (
        ", or the image itself (image/jpeg, image/png, ..., application/octet-stream)" if route == "extract" else ""
    )
    got = f"Content-Type {content_type[:100]!r}" if content_type else "no Content-Type"
    raise UnsupportedMediaType(f"this route takes {takes}; the request has {got}")


def _validate_json(model: type[BaseModel], body: bytes) -> BaseModel:
    if not body.strip():
        raise MalformedJSON("request body is empty; send a JSON object")
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as e:
        raise schema_error(e) from None


def schema_error(e: ValidationError) -> ServiceError:
    """A pydantic validation error as the API's typed error (never echoing the input back: it may
    be megabytes of base64)."""
    errors = e.errors(include_input=False, include_url=False)
    if any(err.get("type") == "json_invalid" for err in errors):
        return MalformedJSON("request body is not valid JSON")
    details = [
        {"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in errors[:20]
    ]
    what = "; ".join(f"{'.'.join(d['loc']) or 'body'}: {d['msg']}" for d in details[:3])
    return InvalidInput(f"request does not fit the schema: {what}", details=details)


def _from_model(route: str, m: Any) -> Parsed:
    if route == "extract":
        return Parsed([m.image], m.aligned, m.all_faces)
    if route == "verify":
        return Parsed([m.image1, m.image2], m.aligned, threshold=m.threshold, fmr=m.fmr, prior=m.prior)
    return Parsed(list(m.images), m.aligned, m.all_faces)


def _flag(name: str, value: str) -> Any:
    """A multipart text field or query parameter's flag, strictly spelled."""
    v = value.strip()
    if name in _NUMBERS:
        lo, hi, closed, what = _NUMBERS[name]
        span = f"[{lo:g}, {hi:g}]" if closed else f"({lo:g}, {hi:g})"
        try:
            t = float(v)
        except ValueError:
            raise InvalidInput(f"{name} must be a number in {span}, got {v[:40]!r}") from None
        if not (lo <= t <= hi if closed else lo < t < hi):
            raise InvalidInput(f"{name} is {what}, in {span}; got {t}")
        return t
    if v not in ("true", "false"):
        raise InvalidInput(f"{name} must be true or false, got {v[:40]!r}")
    return v == "true"


def _from_form(route: str, content_type: str, body: bytes) -> Parsed:
    """A multipart body: image parts (files or base64 text) and flags, every part named."""
    parts: list[tuple[str, ImageInput, bool]] = []  # (name, value, is a file)

    def add(part: tuple[str, ImageInput, bool]) -> None:
        parts.append(part)
        if len(parts) > MAX_PARTS:  # stop parsing now: a flood of tiny parts costs seconds to parse
            raise InvalidInput(f"more than {MAX_PARTS} form parts; this route takes at most {MAX_PARTS}")

    def on_field(f: Field) -> None:
        name, value = (f.field_name or b"").decode("utf-8", "replace"), (f.value or b"").decode("utf-8", "replace")
        add((name, value, False))

    def on_file(f: File) -> None:
        f.file_object.seek(0)
        data = f.file_object.read()
        f.close()
        add(((f.field_name or b"").decode("utf-8", "replace"), data, True))

    try:
        # Every part in memory: the whole body already is (bounded by server.max_body_bytes).
        parser = create_form_parser(
            {"Content-Type": content_type.encode("latin-1")},
            on_field,
            on_file,
            config={"MAX_MEMORY_FILE_SIZE": len(body) + 1, "MAX_BODY_SIZE": len(body)},
        )
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as e:
        raise MalformedJSON(f"multipart body cannot be parsed: {e}") from None
    images: dict[str, list[ImageInput]] = {name: [] for name in _IMAGE_FIELDS[route]}
    flags: dict[str, Any] = {}
    for name, value, is_file in parts:
        if name in images:
            images[name].append(value)
        elif name in _FLAGS[route] and not is_file:
            flags[name] = _flag(name, str(value))
        else:
            allowed = [*_IMAGE_FIELDS[route], *_FLAGS[route]]
            raise InvalidInput(f"unknown form field {name[:40]!r}; this route takes {allowed}")
    if route == "batch":
        got = images["images"]
        if not 1 <= len(got) <= MAX_BATCH_IMAGES:
            raise InvalidInput(f"send 1 to {MAX_BATCH_IMAGES} parts named images; got {len(got)}")
        return Parsed(got, **flags)
    for name, got in images.items():
        if len(got) != 1:
            raise InvalidInput(f"send exactly one part named {name}; got {len(got)}")
    return Parsed([images[n][0] for n in _IMAGE_FIELDS[route]], **flags)


__all__ = ["ImageInput", "Parsed", "parse_body", "schema_error"]
