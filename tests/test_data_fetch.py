"""python -m data_prep.fetch and luna_lra.data.fetch / download: the LRA release fetched from a
loopback HTTP server serving a small archive in the release's layout, built here."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import threading
import types

import numpy as np
import pytest
from PIL import Image

from data_prep import fetch as cli
from luna_lra.data import fetch, listops, pathfinder, retrieval
from luna_lra.data.download import ArchiveStream, FetchError, download

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARD, EASY, MID = "curv_contour_length_14", "curv_baseline", "curv_contour_length_9"
SMALL_COUNTS = {"listops-1000": {"train": 4, "val": 2, "test": 2},
                "tsv_data": {"train": 3, "val": 2, "test": 2},
                "pathfinder32/curv_contour_length_14": {"images": 10}}


# ----------------------------------------------------------------------------- a small release


def listops_lines(n, seed):
    rng = np.random.default_rng(seed)
    rows = ["Source\tTarget"]
    for _ in range(n):
        a, b = rng.integers(0, 10, 2)
        rows.append(f"( ( [MAX {a} {b} ) ] )\t{max(a, b)}")
    return "\n".join(rows) + "\n"


def aan_lines(n, seed):
    rng = np.random.default_rng(seed)
    return "".join(f"{rng.integers(0, 2)}\tP{i}-1\tP{i}-2\tb'paper {i} a'\tb'paper {i} b'\n"
                   for i in range(n))


def write_level(level_dir, n, empty=()):
    """A Pathfinder level in the release layout: metadata/0.npy (text lines) + imgs/0/*.png;
    the sample numbers in `empty` are written as empty files."""
    os.makedirs(os.path.join(level_dir, "metadata"))
    os.makedirs(os.path.join(level_dir, "imgs", "0"))
    lines, rng = [], np.random.default_rng(len(level_dir))
    numbers = [i for i in range(n + len(empty)) if i not in empty][:n - len(empty)] + list(empty)
    for k, i in enumerate(numbers):
        path = os.path.join(level_dir, "imgs", "0", f"sample_{i}.png")
        if i in empty:
            open(path, "wb").close()
        else:
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
        lines.append(f"imgs/0 sample_{i}.png {k} {k % 2} 1.0 14 4 2 0.5 1 1")
    with open(os.path.join(level_dir, "metadata", "0.npy"), "w") as f:
        f.write("\n".join(lines) + "\n")


def make_release(root, listops_n=(4, 2, 2), aan_n=(3, 2, 2), pf_images=10, easy_empty=(),
                 pf_resolutions=(32, 64)):
    """root/lra_release/ with the members of the real archive under lra_release/ (as
    `tar xvf lra_release.gz` leaves them: lra_release/lra_release/...)."""
    base = os.path.join(root, "lra_release", "lra_release")
    os.makedirs(os.path.join(base, "listops-1000"))
    for split, n in zip(("train", "val", "test"), listops_n):
        with open(os.path.join(base, "listops-1000", f"basic_{split}.tsv"), "w") as f:
            f.write(listops_lines(n, len(split)))
    os.makedirs(os.path.join(base, "tsv_data"))
    for split, n in zip(("train", "eval", "test"), aan_n):
        with open(os.path.join(base, "tsv_data", f"new_aan_pairs.{split}.tsv"), "w") as f:
            f.write(aan_lines(n, len(split)))
    for res in pf_resolutions:
        for level in (EASY, MID, HARD):
            write_level(os.path.join(base, f"pathfinder{res}", level), pf_images,
                        easy_empty if (res, level) == (32, EASY) else ())
    with open(os.path.join(base, "README"), "w") as f:
        f.write("not needed by any task\n")
    return os.path.join(root, "lra_release")


def make_archive(tmp_path, **kw):
    src = make_release(str(tmp_path / "src"), **kw)
    path = tmp_path / "lra_release.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src, arcname="lra_release")
    return path


@pytest.fixture
def small_counts(monkeypatch):
    monkeypatch.setattr(fetch, "KNOWN_COUNTS", SMALL_COUNTS)


# ----------------------------------------------------------------------------- a loopback server


class Server:
    """Serves one file at /lra_release.gz with Range / If-Range / ETag, as a CDN does. `plan`
    lists what the next requests get: 'ok', ('cut', nbytes) = headers for the whole answer but
    the connection closed after nbytes of the body, or an HTTP status code."""

    def __init__(self, data: bytes, md5: str | None = None):
        self.data, self.etag, self.md5 = data, '"v1"', md5
        self.plan: list = []
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/lra_release.gz"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def handle(self, h):
        rng, if_range = h.headers.get("Range"), h.headers.get("If-Range")
        self.requests.append({"path": h.path, "range": rng, "if_range": if_range, "sent": 0})
        action = self.plan.pop(0) if self.plan else "ok"
        if h.path != "/lra_release.gz":
            action = 404
        if isinstance(action, int):
            h.send_error(action)
            return
        start = 0
        if rng and (if_range is None or if_range == self.etag):
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
        body = self.data[start:]
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("ETag", self.etag)
        if self.md5:
            h.send_header("x-goog-hash", f"crc32c=AAAAAA==,md5={self.md5}")
        h.end_headers()
        if isinstance(action, tuple):  # ('cut', n): stop after n bytes, close the connection
            body = body[:action[1]]
        h.wfile.write(body)
        self.requests[-1]["sent"] = len(body)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(data: bytes, md5: str | None = None) -> Server:
        servers.append(Server(data, md5))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def run(out, *args):
    return cli.main(["--out", str(out), "--no_progress", "--retry_wait", "0", *args])


def tree(root):
    """{relative path: (size, mtime_ns)} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


# ----------------------------------------------------------------------------- end to end


def test_fetch_unpacks_into_the_readers_layouts_then_does_nothing(tmp_path, serve, small_counts,
                                                                   capsys, caplog):
    caplog.set_level(logging.INFO, logger="luna_lra.data.fetch")
    data = make_archive(tmp_path).read_bytes()
    server = serve(data, md5=md5_b64(data))
    out = tmp_path / "data"
    assert run(out, "--url", server.url, "--tasks", "listops,retrieval,pathfinder32") == 0
    printed = capsys.readouterr().out
    assert "listops: ready" in printed and "train 4, val 2, test 2" in printed
    assert "pathfinder32: ready" in printed and "images 10, train 8, val 1, test 1" in printed
    assert sorted(os.listdir(out)) == ["fetch_manifest.json", "listops", "lra_release.gz",
                                       "pathfinder32", "retrieval"]
    assert sorted(os.listdir(out / "pathfinder32")) == sorted([EASY, MID, HARD])  # no .partial left
    assert "pathfinder64 (" in caplog.text and "left out" in caplog.text  # not asked for

    # The readers take the folders as the configs point at them (data/<task>).
    ns = types.SimpleNamespace
    lo = listops.load_splits(ns(data_dir=str(out / "listops"), max_length=16))
    assert [len(lo[s]["targets"]) for s in ("train", "val", "test")] == [4, 2, 2]
    rt = retrieval.load_splits(ns(data_dir=str(out / "retrieval"), max_length=16))
    assert [len(rt[s]["targets"]) for s in ("train", "val", "test")] == [3, 2, 2]
    pf = pathfinder.load_splits(ns(data_dir=str(out / "pathfinder32"), resolution=32,
                                   level="hard", decode_workers=1))
    assert [len(pf[s]["targets"]) for s in ("train", "val", "test")] == [8, 1, 1]

    manifest = json.loads((out / "fetch_manifest.json").read_text())
    assert manifest["archive"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["archive"]["size"] == len(data) and manifest["archive"]["url"] == server.url
    assert manifest["units"]["listops/listops-1000"]["counts"] == {"train": 4, "val": 2,
                                                                   "test": 2}
    assert len(server.requests) == 1

    # A second run finds everything in place: no request, no file touched.
    before = tree(out)
    assert run(out, "--url", server.url, "--tasks", "listops,retrieval,pathfinder32") == 0
    assert len(server.requests) == 1 and tree(out) == before
    assert "listops: ready (already)" in capsys.readouterr().out


def test_download_cut_in_the_middle_resumes(tmp_path, serve, small_counts):
    data = make_archive(tmp_path).read_bytes()
    server = serve(data)
    half = len(data) // 2
    server.plan = [("cut", half)]
    out = tmp_path / "data"
    assert run(out, "--url", server.url, "--tasks", "listops") == 0
    first, second = server.requests
    assert first["range"] is None and first["sent"] == half
    assert second["range"] == f"bytes={half}-" and second["if_range"] == server.etag
    assert second["sent"] == len(data) - half  # only the rest came the second time
    assert (out / "lra_release.gz").read_bytes() == data


def test_a_killed_download_resumes_in_the_next_run(tmp_path, serve, small_counts, capsys):
    data = make_archive(tmp_path).read_bytes()
    server = serve(data)
    third = len(data) // 3
    server.plan = [("cut", third), 503, 503]
    out = tmp_path / "data"
    assert run(out, "--url", server.url, "--tasks", "listops", "--retries", "1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert any(f"with {third} of {len(data)} bytes" in line and "run again to resume" in line
               for line in err)
    assert "Traceback" not in "\n".join(err)
    assert (out / "lra_release.gz.part").stat().st_size == third
    assert run(out, "--url", server.url, "--tasks", "listops") == 0
    assert server.requests[-1]["range"] == f"bytes={third}-"
    assert (out / "lra_release.gz").read_bytes() == data
    assert not (out / "lra_release.gz.part").exists()


def test_a_file_changed_on_the_server_is_fetched_afresh(tmp_path, serve, small_counts):
    data = make_archive(tmp_path).read_bytes()
    server = serve(b"x" * len(data))  # an old version of the file
    server.plan = [("cut", 100), 503]
    out = tmp_path / "data"
    with pytest.raises(FetchError):
        download(server.url, str(out / "a.gz"), retries=0, retry_wait=0, progress=False)
    server.data, server.etag = data, '"v2"'  # If-Range no longer matches: the whole file
    download(server.url, str(out / "a.gz"), retries=0, retry_wait=0, progress=False)
    assert server.requests[-1]["range"] == "bytes=100-" and server.requests[-1]["sent"] == len(data)
    assert (out / "a.gz").read_bytes() == data


def test_http_404_fails_at_once_with_one_line(tmp_path, serve):
    server = serve(b"abc")
    with pytest.raises(FetchError) as e:
        download(server.url + ".missing", str(tmp_path / "x"), retries=3, retry_wait=0,
                 progress=False)
    assert "HTTP 404" in str(e.value) and "\n" not in str(e.value)
    assert len(server.requests) == 1


# ----------------------------------------------------------------------------- refusals


def test_wrong_checksum_is_refused(tmp_path, serve, small_counts, capsys):
    data = make_archive(tmp_path).read_bytes()
    server = serve(data)
    out = tmp_path / "data"
    assert run(out, "--url", server.url, "--tasks", "listops", "--sha256", "ab" * 32) == 1
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if l.startswith("listops:"))
    assert f"sha256 {hashlib.sha256(data).hexdigest()}, expected {'ab' * 32}" in line
    assert not (out / "listops").exists()  # nothing unpacked, no .partial left behind


def test_a_download_that_differs_from_the_servers_md5_is_refused_and_removed(
        tmp_path, serve, small_counts, capsys):
    data = make_archive(tmp_path).read_bytes()
    server = serve(data, md5=md5_b64(b"other bytes"))
    out = tmp_path / "data"
    assert run(out, "--url", server.url, "--tasks", "listops") == 1
    assert "differs from the server's" in capsys.readouterr().err
    assert not (out / "lra_release.gz").exists() and not (out / "listops").exists()


@pytest.mark.parametrize("damage, word", [("truncate", "truncated"), ("flip", "corrupt")])
def test_truncated_or_corrupt_archive_is_refused(tmp_path, small_counts, capsys, damage, word):
    data = bytearray(make_archive(tmp_path).read_bytes())
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    else:
        data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.gz"
    bad.write_bytes(bytes(data))
    out = tmp_path / "data"
    assert run(out, "--archive", str(bad), "--tasks", "retrieval") == 1
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if str(bad) in l]
    assert len(lines) == 1 and lines[0].startswith("retrieval: ") and word in lines[0]
    assert "Traceback" not in err
    assert not (out / "retrieval").exists()


def test_counts_that_differ_from_the_known_ones_are_refused(tmp_path, monkeypatch, capsys):
    archive = make_archive(tmp_path)
    counts = {**SMALL_COUNTS, "listops-1000": {"train": 5, "val": 2, "test": 2}}
    monkeypatch.setattr(fetch, "KNOWN_COUNTS", counts)
    out = tmp_path / "data"
    assert run(out, "--archive", str(archive), "--tasks", "listops,retrieval") == 1
    captured = capsys.readouterr()
    assert "basic_train.tsv: 4 examples in train; the LRA release's listops-1000 has 5" in \
        captured.err
    assert "retrieval: ready" in captured.out  # the other task is in place all the same
    assert not (out / "listops" / "listops-1000").exists()
    assert (out / "listops" / "listops-1000.partial" / "basic_train.tsv").exists()  # to look at
    monkeypatch.setattr(fetch, "KNOWN_COUNTS", SMALL_COUNTS)
    assert run(out, "--archive", str(archive), "--tasks", "listops,retrieval") == 0
    assert sorted(os.listdir(out / "listops")) == ["listops-1000"]


def test_a_folder_the_fetch_did_not_write_is_not_overwritten(tmp_path, small_counts, capsys):
    archive = make_archive(tmp_path)
    out = tmp_path / "data"
    generated = out / "pathfinder32" / HARD
    generated.mkdir(parents=True)
    (generated / "generator.json").write_text("{}")
    assert run(out, "--archive", str(archive), "--tasks", "pathfinder32,listops") == 1
    captured = capsys.readouterr()
    assert f"pathfinder32: {generated}: already there, but not fetched" in captured.err
    assert "listops: ready" in captured.out
    assert os.listdir(generated) == ["generator.json"]


def test_known_empty_image_is_reported_an_unknown_one_refused(tmp_path, small_counts, capsys):
    archive = make_archive(tmp_path, easy_empty=(172,))
    out = tmp_path / "data"
    assert run(out, "--archive", str(archive), "--tasks", "pathfinder32") == 0
    printed = capsys.readouterr().out
    assert "1 known empty image (imgs/0/sample_172.png)" in printed
    assert "data.skip_bad_images=True" in printed

    archive = make_archive(tmp_path / "other", easy_empty=(5,))
    out = tmp_path / "data2"
    assert run(out, "--archive", str(archive), "--tasks", "pathfinder32") == 1
    err = capsys.readouterr().err
    assert f"{EASY}.partial/imgs/0/sample_5.png: listed in the metadata but not a PNG" in err
    assert (out / "pathfinder32" / HARD).is_dir()  # the other levels are in place


# ----------------------------------------------------------------------------- kills


def test_a_killed_unpack_leaves_nothing_where_readers_look(tmp_path, small_counts, monkeypatch):
    archive = make_archive(tmp_path)
    out = tmp_path / "data"
    real_add, seen = fetch._Writer.add, []

    def add_then_die(self, name, src):
        real_add(self, name, src)
        seen.append(name)
        if len(seen) == 20:
            raise KeyboardInterrupt  # a kill in the middle of the archive

    monkeypatch.setattr(fetch._Writer, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(out, "--archive", str(archive), "--tasks", "pathfinder32")
    assert not (out / "pathfinder32").exists() or not os.listdir(out / "pathfinder32")
    monkeypatch.setattr(fetch._Writer, "add", real_add)
    assert run(out, "--archive", str(archive), "--tasks", "pathfinder32") == 0
    assert sorted(os.listdir(out / "pathfinder32")) == sorted([EASY, MID, HARD])


def test_a_rename_cut_short_is_finished_without_reading_the_archive(tmp_path, small_counts):
    archive = make_archive(tmp_path)
    out = tmp_path / "data"
    assert run(out, "--archive", str(archive), "--tasks", "listops") == 0
    dest = out / "listops" / "listops-1000"
    os.rename(dest, str(dest) + ".partial")  # as if killed after the manifest, before rename
    archive.unlink()
    assert run(out, "--archive", str(archive), "--tasks", "listops") == 0
    assert sorted(os.listdir(dest)) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]


# ----------------------------------------------------------------------------- pieces


def test_release_paths_with_one_or_two_prefixes():
    assert fetch.release_path("lra_release/lra_release/listops-1000/basic_val.tsv") == (
        "listops-1000", "basic_val.tsv")
    assert fetch.release_path("lra_release/pathfinder128/curv_baseline/imgs/3/sample_9.png") == (
        "pathfinder128/curv_baseline", "imgs/3/sample_9.png")
    (unit,) = fetch.RELEASE_TASKS["retrieval"]
    assert fetch.member_target(unit, "lra_release/tsv_data/new_aan_pairs.eval.tsv") == \
        "new_aan_pairs.eval.tsv"
    assert fetch.member_target(unit, "lra_release/tsv_data/new_aan_pairs.eval.tsv~") is None
    assert fetch.member_target(unit, "__MACOSX/lra_release/tsv_data/new_aan_pairs.eval.tsv") \
        is None


def test_plain_tar_is_read_and_hashed(tmp_path):
    payload = b"hello" * 1000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("./a/b.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (tmp_path / "x.tar").write_bytes(buf.getvalue())
    with ArchiveStream(str(tmp_path / "x.tar")) as stream:
        got = [(name, f.read()) for name, f in stream.members()]
        digests = stream.finish()
    assert got == [("a/b.txt", payload)]
    assert digests["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    assert digests["size"] == len(buf.getvalue())


def test_unknown_task_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--tasks", "listops,bogus"])
    assert e.value.code == 2 and "unknown task bogus" in capsys.readouterr().err


# ----------------------------------------------------------------------------- TFDS tasks


def test_tfds_tasks_say_in_one_line_when_tfds_cannot(tmp_path, small_counts, monkeypatch, capsys):
    from luna_lra.data import tfds_source

    def offline(name, data_dir):
        raise ConnectionError(f"cannot reach the server for {name}\nmore detail")

    monkeypatch.setattr(tfds_source, "prepare_tfds", offline)
    monkeypatch.setattr(tfds_source, "has_tensorflow", lambda: False)
    archive = make_archive(tmp_path)
    out = tmp_path / "data"
    assert run(out, "--archive", str(archive), "--tasks", "text,listops,image") == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    text_line = next(l for l in err if l.startswith("text:"))
    assert "TFDS could not prepare imdb_reviews (ConnectionError: cannot reach the server for " \
           "imdb_reviews)" in text_line
    assert f"python -m data_prep.text --source aclimdb --out {out / 'text'}" in text_line
    image_line = next(l for l in err if l.startswith("image:"))
    assert "needs TensorFlow" in image_line and f"data_prep.image --out {out / 'image'}" in \
        image_line
    assert "listops: ready" in captured.out


def test_tfds_tasks_with_data_in_place_or_prepared(tmp_path, monkeypatch, capsys):
    from luna_lra.data import tfds_source

    calls = []

    def fake_prepare(name, data_dir):  # writes what a prepared TFDS dataset leaves
        calls.append((name, data_dir))
        version = os.path.join(data_dir, name, *(["plain_text"] if name == "imdb_reviews"
                                                 else []), "1.0.0")
        os.makedirs(version)
        open(os.path.join(version, "dataset_info.json"), "w").close()
        return version

    monkeypatch.setattr(tfds_source, "prepare_tfds", fake_prepare)
    monkeypatch.setattr(tfds_source, "has_tensorflow", lambda: True)
    out = tmp_path / "data"
    folder = out / "image" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(b"")  # the python pickles are there already
    assert run(out, "--tasks", "text,image") == 0
    printed = capsys.readouterr().out
    assert calls == [("imdb_reviews", str(out / "text"))]
    assert "text: ready" in printed and "image: ready (already)" in printed and "(pickle)" in \
        printed
    assert run(out, "--tasks", "text") == 0 and len(calls) == 1  # now found, not prepared again


@pytest.mark.parametrize("task", sorted(fetch.TFDS_TASKS))
def test_the_real_tfds_builders_know_their_downloads_offline(tmp_path, task):
    """The part of TFDS's download_and_prepare that needs no network: the builder reads its
    checksum file, through imports a fresh install must have (importlib_resources)."""
    import tensorflow_datasets as tfds

    urls = tfds.builder(fetch.TFDS_TASKS[task], data_dir=str(tmp_path)).url_infos
    assert urls and all(info.checksum for info in urls.values())


# ----------------------------------------------------------------------------- the real counts


def test_cli_with_the_release_sizes_of_listops_and_retrieval(tmp_path, serve):
    """`python -m data_prep.fetch` as a command, against the counts the release has."""
    known = fetch.KNOWN_COUNTS
    data = make_archive(tmp_path, listops_n=tuple(known["listops-1000"].values()),
                        aan_n=tuple(known["tsv_data"].values()), pf_images=4,
                        pf_resolutions=(128,)).read_bytes()
    server = serve(data)
    server.plan = [("cut", len(data) // 2)]
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "data_prep.fetch", "--out", str(out), "--url", server.url,
           "--tasks", "listops,retrieval,pathx", "--no_progress", "--retry_wait", "0"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train 96,000, val 2,000, test 2,000" in proc.stdout
    assert "train 147,086, val 18,090, test 17,437" in proc.stdout
    assert "pathx: ready" in proc.stdout and str(out / "pathfinder128" / HARD) in proc.stdout
    assert server.requests[1]["range"] == f"bytes={len(data) // 2}-"
