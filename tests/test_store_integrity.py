"""Nothing silently wrong in an embedding store (issue 37, findings 1, 5 and part of 6).

Every fault is injected on a private copy of a small real store (4 ORL subjects + a blank image:
41 images in shards of 8): flipped bytes and bits in a shard, a damaged zstd page, rows
rewritten with a wrong norm, an edited identity, a run killed while creating its store, two
extracts on one store at once, a file-size limit, a full disk, a resume on another ISA. Oracles: pyarrow and
pandas reading the files directly (the fault is real: pyarrow alone reads changed data without a
word), the original store's rows (a recomputed shard equals them to the bit), and the commands'
exit status and messages as a user sees them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fetoolkit.eval_run import run as eval_run
from fetoolkit.extract_run import extract
from fetoolkit.extraction import image_list
from fetoolkit.store import DamagedShard, StoreError, read_manifest, read_rows
from fetoolkit.store_read import store_embedded, store_gallery
from fetoolkit.store_verify import verify_store
from tests.test_extract import REPO, _cli, _emb, _env, _rows, _spec, compose_eval

SHARD = "shard-00001.parquet"


@pytest.fixture(scope="module")
def faces(orl, tmp_path_factory) -> Path:
    """ORL subjects s1..s4 (10 images each) + a blank grey image (a failure to enrol): 41 images."""
    root = tmp_path_factory.mktemp("faces")
    for s in ("s1", "s2", "s3", "s4"):
        shutil.copytree(orl.paths[0].parent.parent / s, root / s)
    Image.fromarray(np.full((112, 92), 128, np.uint8)).save(root / "s4" / "99.pgm")
    return root


@pytest.fixture(scope="module")
def made(faces, tmp_path_factory) -> Path:
    """The store of ``faces``, shards of 8 images (6 shards), never changed: tests work on copies."""
    out = tmp_path_factory.mktemp("made") / "store"
    images, _ = image_list(None, str(faces))
    extract(_spec(), images, str(out), shard_size=8, workers=1, progress=False)
    return out


@pytest.fixture
def store(made, tmp_path) -> Path:
    """A private copy of ``made``."""
    return Path(shutil.copytree(made, tmp_path / "store"))


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def _write_manifest(store: Path, m: dict) -> None:
    (store / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")


def _rerecord(store: Path, name: str) -> None:
    """Record a replaced shard file's size and sha256 in the manifest, as if it had been written so
    (only the checks behind the sha256 can then catch what is wrong with it)."""
    m = _manifest(store)
    rec = next(r for r in m["shards"] if r["file"] == name)
    data = (store / name).read_bytes()
    rec["bytes"], rec["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _write_manifest(store, m)


def _asked(store: Path) -> dict:
    """The identity a reader with the store's own settings asks for."""
    return _manifest(store)["identity"]


def _refused(store: Path, *match: str, gallery: bool = True) -> None:
    """Every reader of the store (rows, the gallery unless not ``gallery``, the eval's reader) refuses it,
    naming ``match``."""
    for read in (
        lambda: read_rows(store),
        *([lambda: store_gallery(store, _asked(store))] if gallery else []),
        lambda: store_embedded(store, _image_paths(store), _asked(store)),
    ):
        with pytest.raises(StoreError) as err:
            read()
        for m in match:
            assert m in str(err.value), (m, str(err.value))


def _image_paths(store: Path) -> list[str]:
    return pq.read_table(store / "images.parquet").column("path").to_pylist()


def _column_bytes(path: Path, column: str) -> tuple[int, int]:
    """``(start, stop)`` byte range of a column chunk (dictionary page included) of a Parquet file."""
    rg = pq.ParquetFile(path).metadata.row_group(0)
    c = next(rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema.split(".")[0] == column)
    start = c.dictionary_page_offset or c.data_page_offset
    return start, start + c.total_compressed_size


def _recomputed_equals(store: Path, made: Path, faces: Path, name: str) -> None:
    """The next extract recomputes shard ``name`` (and only it) and the store equals the original to the bit."""
    images, _ = image_list(None, str(faces))
    s = extract(_spec(), images, str(store), shard_size=8, workers=1, progress=False)
    assert s["run"]["n_shards_computed"] == 1 and s["run"]["damaged_recomputed"] == [name] and s["complete"]
    a, b = _rows(made), _rows(store)
    np.testing.assert_array_equal(_emb(a), _emb(b))
    np.testing.assert_array_equal(_emb(a, "embedding_flip"), _emb(b, "embedding_flip"))
    assert len(read_rows(store)) == 41  # and every reader takes it again


def test_flipped_bytes_in_the_embedding_column_are_named_and_recomputed(store, made, faces, tmp_path) -> None:
    """4 flipped bytes inside the embedding column: pyarrow reads changed values without a word
    (an embedding norm far from 1); every reader refuses the shard by name, the eval job too, and
    the next extract recomputes it (on the base code: believed, and "0 shards to compute")."""
    f = store / SHARD
    data = f.read_bytes()
    start, stop = _column_bytes(f, "embedding")
    for pos in range(start + (stop - start) // 3, stop - 4, 97):  # the first 4-byte flip pyarrow reads silently
        bad = bytearray(data)
        bad[pos : pos + 4] = bytes(b ^ 0xFF for b in bad[pos : pos + 4])
        try:
            t = pq.read_table(pa.BufferReader(bytes(bad)))
        except (OSError, pa.ArrowException):
            continue
        e = np.stack([x for x, ok in zip(t.column("embedding").to_pylist(), t.column("ok").to_pylist()) if ok])
        with np.errstate(over="ignore", invalid="ignore"):
            if not np.allclose(np.linalg.norm(np.asarray(e, np.float64), axis=1), 1.0, atol=1e-3):
                break
    else:
        pytest.fail("no 4-byte flip of the embedding column is read silently by pyarrow")
    f.write_bytes(bytes(bad))
    _refused(store, str(f), "sha256", "run the extract command that made the store again")
    common = ["model=arcface", "dataset=folder", f"dataset.root={faces}", "dataset.n_folds=2", "stats.n_boot=0"]
    with pytest.raises(StoreError, match=SHARD):
        eval_run(compose_eval([*common, "pipeline.progress=false", f"store={store}"]), tmp_path / "eval")
    assert not (tmp_path / "eval" / "results.json").exists()
    _recomputed_equals(store, made, faces, SHARD)


def test_every_random_single_bit_flip_of_a_shard_is_caught(store) -> None:
    """200 random single-bit flips over a whole shard file, each on its own: every one is refused,
    naming the shard (the sha256 covers every byte). pyarrow alone reads most of them silently."""
    f = store / SHARD
    data = f.read_bytes()
    rng = np.random.default_rng(37)
    silent = 0
    for bit in rng.choice(len(data) * 8, size=200, replace=False):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        f.write_bytes(bytes(bad))
        try:
            changed = not pq.read_table(pa.BufferReader(bytes(bad))).equals(pq.read_table(pa.BufferReader(data)))
            silent += changed
        except (OSError, pa.ArrowException):
            pass
        with pytest.raises(StoreError, match=f"shard {f} "):
            read_rows(store)
    f.write_bytes(data)
    assert len(read_rows(store)) == 41
    assert silent > 20, silent  # the fault is real: without the check these reached the figures


def test_a_damaged_zstd_page_is_named_and_recomputed(store, made, faces) -> None:
    """A damaged zstd page (recorded as it is, so the sha256 agrees): no raw ZSTD traceback but the
    store and the shard named by the readers that decode that column (the gallery reads only
    ``ok`` and ``embedding``), and the extract does not believe the store complete."""
    f = store / SHARD
    data = f.read_bytes()
    start, stop = _column_bytes(f, "path")
    for pos in range(start, stop):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        try:
            pq.read_table(pa.BufferReader(bytes(bad)))
        except (OSError, pa.ArrowException) as e:
            if "ZSTD" in str(e):
                break
    else:
        pytest.fail("no flip of the path column gives a ZSTD error")
    f.write_bytes(bytes(bad))
    _rerecord(store, SHARD)
    _refused(store, f"store {store}", str(f), "cannot be decoded", "ZSTD", "run the extract command", gallery=False)
    _recomputed_equals(store, made, faces, SHARD)


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [("embedding", 5344.0, "norm 5344"), ("embedding_flip", np.nan, "non-finite"), ("raw_norm", -1.0, "raw_norm")],
)
def test_rows_with_a_wrong_norm_or_non_finite_values_are_refused(store, made, faces, column, value, says) -> None:
    """A shard rewritten with one bad value and recorded so (its sha256 agrees): the row checks
    (finite, unit norm within 1e-4, a positive raw norm) of a read of the embeddings, of ``cache
    verify`` and of the next extract refuse it, naming the image, and the extract computes it again."""
    f = store / SHARD
    t = pq.read_table(f)
    rows = {c: t.column(c).combine_chunks() for c in t.column_names}
    ok = rows["ok"].to_numpy(zero_copy_only=False)
    j = int(np.flatnonzero(ok)[2])  # an enrolled row
    if column == "raw_norm":
        v = rows[column].to_numpy().copy()
        v[j] = value
        rows[column] = pa.array(v, pa.float32())
    else:
        e = np.zeros((len(ok), 192), np.float32)
        e[ok] = np.stack(rows[column].to_numpy(zero_copy_only=False)[ok])
        if np.isfinite(value):
            e[j] *= value
        else:
            e[j, 7] = value
        values = pa.array(e.reshape(-1), pa.float32())
        rows[column] = pa.FixedSizeListArray.from_arrays(values, 192, mask=pa.array(~ok))
    pq.write_table(pa.table(rows, schema=t.schema), f, compression="zstd")
    _rerecord(store, SHARD)
    path = t.column("path")[j].as_py()
    with pytest.raises(DamagedShard) as err:
        read_rows(store, ["ok", "embedding"])
    assert path in str(err.value) and str(f) in str(err.value) and says in str(err.value), str(err.value)
    report = verify_store(store)
    assert [d[0] for d in report.damaged] == [f] and path in report.damaged[0][1] and says in report.damaged[0][1]
    _recomputed_equals(store, made, faces, SHARD)


def test_an_edited_identity_is_refused_naming_the_manifest(store, faces) -> None:
    """The identity edited to another detector's settings (its digest left): a reader asking for
    those settings, and an extract with them, are refused naming manifest.json (the base code
    believed it: "0 shards to compute")."""
    m = _manifest(store)
    m["identity"]["detector"]["min_face_size"] = 40
    _write_manifest(store, m)
    asked = m["identity"]
    with pytest.raises(StoreError) as err:
        store_gallery(store, asked)
    assert str(store / "manifest.json") in str(err.value) and "identity_sha256" in str(err.value)
    assert "delete" in str(err.value)
    images, _ = image_list(None, str(faces))
    with pytest.raises(StoreError, match="identity_sha256"):
        extract(_spec(min_face_size=40), images, str(store), shard_size=8, workers=1, progress=False)
    assert len(_manifest(store)["runs"]) == 1  # refused before any run was recorded


def test_cache_verify_covers_stores(store, tmp_path, caplog, capsys) -> None:
    """``python -m fetoolkit.cache verify STORE``: 0 for a good store; 1 naming each damaged shard
    and an edited identity; 2 for a folder that is not a store; documented in its --help."""
    from fetoolkit.jobs.cache import main

    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "STORE" in capsys.readouterr().out
    with caplog.at_level(logging.INFO, logger="fetoolkit.cache"):
        assert main(["verify", str(store)]) == 0
    assert "6 of 6 shards" in caplog.text and "0 damaged" in caplog.text
    shard2 = store / "shard-00002.parquet"
    shard2.write_bytes(shard2.read_bytes()[:-100])  # truncated
    bad = bytearray((store / SHARD).read_bytes())
    bad[len(bad) // 2] ^= 0x01
    (store / SHARD).write_bytes(bytes(bad))
    m = _manifest(store)
    m["identity"]["model"] = "another"
    _write_manifest(store, m)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fetoolkit.cache"):
        assert main(["verify", str(store)]) == 1
    damaged = [ln for ln in caplog.text.splitlines() if "DAMAGED" in ln]
    assert len(damaged) == 3, caplog.text
    assert any(str(shard2) in ln and "bytes" in ln for ln in damaged)
    assert any(str(store / SHARD) in ln and "sha256" in ln for ln in damaged)
    assert any(str(store / "manifest.json") in ln and "identity_sha256" in ln for ln in damaged)
    assert "3 damaged" in caplog.text and "run the extract command that made the store again" in caplog.text
    (tmp_path / "plain").mkdir()
    assert main(["verify", str(tmp_path / "plain")]) == 2


def test_a_store_killed_while_being_created_is_named_and_created_again(made, faces, tmp_path) -> None:
    """A real ``kill -9`` at the moment of creation (after the image list, before manifest.json):
    readers name it half-created with the fix; the next extract creates it (the base code refused
    it forever as "not a store")."""
    folder = tmp_path / "half"
    script = (
        "import os, signal\n"
        "from fetoolkit import store\n"
        "store.Store.save = lambda self: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from tests.test_extract import _spec\n"
        "from fetoolkit.extraction import image_list\n"
        "from fetoolkit.extract_run import extract\n"
        f"images, _ = image_list(None, {str(faces)!r})\n"
        f"extract(_spec(), images, {str(folder)!r}, shard_size=8, workers=1, progress=False)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], env=_env(), cwd=REPO, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert (folder / "images.parquet").is_file() and not (folder / "manifest.json").exists()
    for read in (lambda: read_manifest(folder), lambda: store_gallery(folder, _asked(made))):
        with pytest.raises(StoreError) as err:
            read()
        assert "half-created" in str(err.value) and "run the extract command again" in str(err.value)
        assert "delete the folder" in str(err.value) and str(folder) in str(err.value)
    images, _ = image_list(None, str(faces))
    s = extract(_spec(), images, str(folder), shard_size=8, workers=1, progress=False)
    assert s["complete"] and s["run"]["n_shards_computed"] == 6
    np.testing.assert_array_equal(_emb(_rows(made)), _emb(_rows(folder)))
    # a folder of someone else's files is still refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "images.parquet").write_text("not ours")
    with pytest.raises(StoreError, match="not empty"):
        extract(_spec(), images, str(tmp_path / "other"), shard_size=8, progress=False)


def test_the_store_lock_is_held_by_one_process_and_released_by_kill_9(tmp_path) -> None:
    """The lock of a store held by another process refuses this one, naming the store and that
    process; a ``kill -9`` of the holder releases it (the kernel closes its file)."""
    folder = tmp_path / "locked"
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom fetoolkit.store_lock import store_lock\n"
        f"with store_lock(Path({str(folder)!r})):\n    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], env=_env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        from fetoolkit.store_lock import store_lock

        with pytest.raises(StoreError) as err:
            with store_lock(folder):
                pass
        assert str(folder) in str(err.value) and f"pid {p.pid}" in str(err.value)
    finally:
        p.kill()
        p.wait(timeout=30)
    with store_lock(folder):
        pass


def test_two_extracts_on_one_store_second_fails_fast(tmp_path) -> None:
    """Two real extract jobs on one store (ORL, 8 shards): the second fails at once naming the store
    and the first's pid; the first finishes, recorded finished (the base code ran both, each
    computing everything, and the finished run was recorded as killed)."""
    store = tmp_path / "orl"
    first = subprocess.Popen(
        _cli("dataset=orl", f"store={store}", "shard_size=50", "workers=1", cwd=tmp_path / "a"),
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            try:
                if _manifest(store)["shards"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        t0 = time.monotonic()
        second = subprocess.run(
            _cli("dataset=orl", f"store={store}", "shard_size=50", "workers=1", cwd=tmp_path / "b"),
            env=_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        took = time.monotonic() - t0
        assert second.returncode == 2, f"the second extract ran (exit {second.returncode}): {second.stderr[-2000:]}"
        assert first.poll() is None, "the first extract ended before the second failed: it did not fail fast"
        err = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
        assert len(err) == 1 and f"store {store} is being written by another extract" in err[0]
        assert f"pid {first.pid}" in err[0] and "Traceback" not in second.stderr
        _, stderr = first.communicate(timeout=600)
        assert first.returncode == 0, stderr[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    m = _manifest(store)
    assert m["complete"] and len(m["runs"]) == 1 and m["runs"][0]["finished"] and m["runs"][0]["n_computed"] == 400
    print(json.dumps({"second_failed_after_s": round(took, 1)}))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_size_limit_names_the_file_and_the_fix(faces, tmp_path, workers) -> None:
    """A real file-size limit (``ulimit -f``, 16 KB: the image list and manifest fit, a shard does
    not), in this process (workers=1) or in worker processes (workers=2): one line naming the
    shard file, the cause and the fix, exit 2; the store stays resumable."""
    store = tmp_path / "limited"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    cmd = _cli(f"images={faces}", f"store={store}", "shard_size=8", f"workers={workers}", cwd=tmp_path)
    r = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert r.returncode == 2, r.stderr[-3000:]
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"cannot write {store}/shard-0000" in err[0] and "File too large" in err[0] and "ulimit -f" in err[0]
    images, _ = image_list(None, str(faces))
    s = extract(_spec(), images, str(store), shard_size=8, workers=1, progress=False)
    assert s["complete"]


def test_a_full_disk_names_the_file_and_the_fix(faces, tmp_path, monkeypatch) -> None:
    """``ENOSPC`` from the Parquet writer (simulated: a real full disk needs a file system of its
    own): the error names the file, says the disk is full and how to go on."""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    images, _ = image_list(None, str(faces))
    with pytest.raises(StoreError) as err:
        extract(_spec(), images, str(tmp_path / "full"), shard_size=8, workers=1, progress=False)
    msg = str(err.value)
    assert f"cannot write {tmp_path / 'full' / 'images.parquet'}" in msg and "the disk is full" in msg


def test_a_resume_on_another_isa_is_logged_and_recorded(store, faces, monkeypatch, caplog) -> None:
    """A store resumed on a CPU that answers as AVX2-only (the CPUID mask's variable): the log says
    so, the run records its ISA and the runs it differs from (``isa_mixed`` derived from them), and the
    eval's reader warns and records it (the base code mixed them without a word)."""
    from fetoolkit.store_verify import isa_mixed

    (store / "shard-00002.parquet").unlink()  # a shard left to compute
    monkeypatch.setenv("FETOOLKIT_CPUID_MASK", "avx2")
    images, _ = image_list(None, str(faces))
    with caplog.at_level(logging.WARNING, logger="fetoolkit"):
        s = extract(_spec(), images, str(store), shard_size=8, workers=1, progress=False)
    assert s["run"]["n_shards_computed"] == 1
    assert "another CPU ISA" in caplog.text and "masked to avx2" in caplog.text
    m = _manifest(store)
    assert m["runs"][-1]["isa"]["isa_masked"] == "avx2" and m["runs"][-1]["isa_differs_from_runs"] == [0]
    assert m["runs"][0]["isa"]["isa_masked"] is None and isa_mixed(m) and "isa_mixed" not in m
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fetoolkit"):
        _, source = store_embedded(store, images.paths, _asked(store))
    assert "computed on 2 CPU ISAs" in caplog.text and source["isa_mixed"] is True
    assert [r["isa"]["isa_masked"] for r in source["runs"]] == [None, "avx2"]


def test_an_embedding_the_model_got_wrong_is_a_failure_to_enrol(made, faces, tmp_path, monkeypatch, caplog) -> None:
    """The model returns NaN for one face and a zero vector for another: the extract finishes (on
    the base code every run refused the shard, so the store could never complete); those two images
    are failures to enrol with the reason, counted and logged; every other row equals the store's."""
    import fetoolkit.extraction as extraction

    real, calls = extraction.embed_crops, []

    def wrong(faces_, *args, **kwargs):
        out = real(faces_, *args, **kwargs)
        if not calls:
            out[0], out[1] = np.nan, 0.0
        calls.append(len(out))
        return out

    monkeypatch.setattr(extraction, "embed_crops", wrong)
    images, _ = image_list(None, str(faces))
    with caplog.at_level(logging.WARNING, logger="fetoolkit"):
        s = extract(_spec(), images, str(tmp_path / "s"), shard_size=8, workers=1, progress=False)
    a, b = _rows(made), _rows(tmp_path / "s")
    first = list(np.flatnonzero(a["ok"].to_numpy())[:2])
    assert s["complete"] and s["n_failed"] == int((~a["ok"]).sum()) + 2 and s["run"]["n_failed"] == s["n_failed"]
    assert list(b.loc[first, "failure"]) == ["the model's embedding is not finite", "the model's embedding has norm 0"]
    assert not b.loc[first, "ok"].any() and "the model's embedding is not finite" in caplog.text
    rest = a.index.difference(first)
    assert (a.loc[rest, "ok"] == b.loc[rest, "ok"]).all()
    assert np.array_equal(_emb(a.loc[rest]), _emb(b.loc[rest]), equal_nan=True)
    assert verify_store(tmp_path / "s").damaged == [] and len(read_rows(tmp_path / "s")) == 41


@pytest.mark.parametrize(
    "edit", [lambda r: r.pop("index"), lambda r: r.update(index=None), lambda r: r.update(n_rows="8")]
)
def test_a_malformed_manifest_record_is_named_not_a_traceback(store, made, faces, edit) -> None:
    """A shard record of valid JSON with its ``index`` missing or null, or a count not a number
    (the base code: KeyError / TypeError tracebacks): readers refuse it naming the manifest,
    ``cache verify`` lists it, and the next extract computes that shard again."""
    m = _manifest(store)
    edit(m["shards"][1])
    _write_manifest(store, m)
    _refused(store, str(store / "manifest.json"), "manifest record", "run the extract command")
    report = verify_store(store)
    assert len(report.damaged) == 1 and "manifest record" in report.damaged[0][1]
    _recomputed_equals(store, made, faces, SHARD)


def test_a_plain_read_decodes_only_the_columns_asked_for(store) -> None:
    """``read_rows(columns)``: those columns only (the others are not decoded); the sha256 still
    refuses a changed byte in a column not asked for."""
    t = read_rows(store, ["ok", "embedding"])
    assert t.column_names == ["ok", "embedding"] and t.num_rows == 41
    f = store / SHARD
    start, stop = _column_bytes(f, "landmarks")
    bad = bytearray(f.read_bytes())
    bad[(start + stop) // 2] ^= 0x10
    f.write_bytes(bytes(bad))
    with pytest.raises(StoreError, match="sha256"):
        read_rows(store, ["ok", "embedding"])


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_file_system_without_locks_is_said_not_a_traceback(tmp_path, monkeypatch, caplog, code) -> None:
    """NFS / SMB answering ``flock`` with ENOLCK or EOPNOTSUPP (simulated): the store's write lock
    and a run folder's claim (one helper) go on with one warning naming the lock file (the base
    code's store lock let the raw OSError out)."""
    import fcntl

    from fetoolkit.locks import describe_holder
    from fetoolkit.run_dir import claim
    from fetoolkit.store_lock import store_lock

    def no_locks(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="fetoolkit"):
        with store_lock(tmp_path / "store") as lock:
            assert f"pid {os.getpid()}" in describe_holder(lock)
        with claim(tmp_path / "run"):
            pass
    assert str(tmp_path / "store" / ".extract.lock") in caplog.text and "cannot lock" in caplog.text
    assert "a second extract on this store would not be refused" in caplog.text
    assert "a second run given this folder would not be refused" in caplog.text
