"""scripts/fetch_corpus.py: the real-capture corpus from its sources, by commit, sha256-checked.

No test needs the network: the download path runs against a local HTTP server laid out
as GitHub's raw and LFS hosts are ({repo}/{commit}/{path}), serving real captures from
tests/data; the repository's manifest is checked against the shared corpus where that
is present.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.server
import io
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from .paths import PCAPS, REAL, ROOT

SCRIPT = ROOT / "scripts" / "fetch_corpus.py"
REPO_MANIFEST = ROOT / "scripts" / "real-corpus.tsv"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COLUMNS = ["file", "repo", "path", "commit", "label", "sha256"]


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS, delimiter="\t")
        w.writeheader()
        w.writerows(rows)


@pytest.fixture
def github(tmp_path: Path):
    """A local HTTP server standing in for raw.githubusercontent.com and the LFS media host."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a) -> None:
            requests.append(self.path)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield {"root": root, "requests": requests, "raw": base + "/raw/{repo}/{commit}/{path}",
               "lfs": base + "/lfs/{repo}/{commit}/{path}"}
    finally:
        srv.shutdown()
        srv.server_close()


def _publish(root: Path, host: str, repo: str, path: str, data: bytes) -> None:
    p = root / host / repo / COMMIT / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_fetch_verifies_every_file_and_keeps_none_that_fails(github, tmp_path: Path) -> None:
    pcaps = sorted(PCAPS.glob("*.pcap"))[:4]
    assert len(pcaps) == 4
    data = [p.read_bytes() for p in pcaps]
    root = github["root"]
    # a plain file, a zip member (names with spaces), a gzipped file, an LFS-stored file
    _publish(root, "raw", "o/plain", "pcaps/a.pcap", data[0])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("SCANS/syn scan.pcap", data[1])
        z.writestr("other.pcap", data[2])
    _publish(root, "raw", "o/zips", "Ev/scans.zip", buf.getvalue())
    _publish(root, "raw", "o/gz", "h/trace.pcap_.gz", gzip.compress(data[2]))
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{_sha(data[3])}\nsize {len(data[3])}\n"
    _publish(root, "raw", "o/lfs", "big.pcap", pointer.encode())
    _publish(root, "lfs", "o/lfs", "big.pcap", data[3])
    rows = [
        {"file": "benign/plain.pcap", "repo": "o/plain", "path": "pcaps/a.pcap", "sha256": _sha(data[0])},
        {"file": "attack/Recon-PortScan/syn.pcap", "repo": "o/zips", "path": "Ev/scans.zip!/SCANS/syn scan.pcap",
         "sha256": _sha(data[1])},
        {"file": "attack/Backdoor_Malware/trace.pcap", "repo": "o/gz", "path": "h/trace.pcap_.gz (gunzipped)",
         "sha256": _sha(data[2])},
        {"file": "benign/big.pcap", "repo": "o/lfs", "path": "big.pcap", "sha256": _sha(data[3])},
        # the archive's other member, listed with the sha256 of something else
        {"file": "attack/Recon-PortScan/tampered.pcap", "repo": "o/zips", "path": "Ev/scans.zip!/other.pcap",
         "sha256": _sha(data[0])},
        {"file": "benign/gone.pcap", "repo": "o/plain", "path": "pcaps/gone.pcap", "sha256": _sha(b"x")},
    ]
    for r in rows:
        r.update(commit=COMMIT, label="BenignTraffic")
    manifest = tmp_path / "m.tsv"
    _write_manifest(manifest, rows)
    dest = tmp_path / "corpus"
    urls = ["--raw-url", github["raw"], "--lfs-url", github["lfs"]]
    p = _run("--manifest", str(manifest), "--dest", str(dest), *urls)
    assert p.returncode == 1, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("fetch_corpus: error: ")]
    assert len(errors) == 2, p.stderr
    assert errors[0].startswith("fetch_corpus: error: attack/Recon-PortScan/tampered.pcap: o/zips@0123456789ab "
                                "Ev/scans.zip!/other.pcap: sha256 ") and errors[0].endswith("; not kept")
    assert errors[1].startswith("fetch_corpus: error: benign/gone.pcap: ") and "HTTP 404" in errors[1]
    assert "6 files: 0 already present and verified, 4 fetched and verified, 2 failed" in p.stderr
    for r in rows[:4]:
        assert _sha((dest / r["file"]).read_bytes()) == r["sha256"], r["file"]
    assert not (dest / rows[4]["file"]).exists() and not list(dest.rglob("*.part"))
    assert not (dest / "MANIFEST.tsv").exists()  # an incomplete corpus is not offered to the trainer
    assert sum("scans.zip" in q for q in github["requests"]) == 1  # the archive once for both members

    # without the bad rows: nothing is downloaded again, and the manifest lands beside the files
    _write_manifest(manifest, rows[:4])
    github["requests"].clear()
    p = _run("--manifest", str(manifest), "--dest", str(dest), *urls)
    assert p.returncode == 0, p.stderr
    assert "4 files: 4 already present and verified, 0 fetched and verified, 0 failed" in p.stderr
    assert github["requests"] == []
    assert (dest / "MANIFEST.tsv").read_bytes() == manifest.read_bytes()

    # --check needs no network; a file changed on disk is reported, by name
    p = _run("--manifest", str(manifest), "--dest", str(dest), "--check", "--raw-url", "http://127.0.0.1:9/{path}")
    assert p.returncode == 0, p.stderr
    (dest / rows[0]["file"]).write_bytes(b"changed")
    p = _run("--manifest", str(manifest), "--dest", str(dest), "--check")
    assert p.returncode == 1
    assert f"fetch_corpus: error: benign/plain.pcap: sha256 {_sha(b'changed')} differs from the manifest's " \
        f"{rows[0]['sha256']}" in p.stderr


def test_bad_manifest_rows_are_one_line_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "m.tsv"
    row = {"file": "a.pcap", "repo": "o/r", "path": "a.pcap", "commit": COMMIT, "label": "BenignTraffic",
           "sha256": "0" * 64}
    for change, words in (({"commit": "main"}, "line 2: commit 'main' is not a full git hash"),
                          ({"sha256": "abc"}, "line 2: sha256 'abc' is not 64 hex digits"),
                          ({"file": "../../etc/x"}, "line 2: file '../../etc/x' must stay inside --dest"),
                          ({"repo": ""}, "line 2: no repo")):
        _write_manifest(manifest, [{**row, **change}])
        p = _run("--manifest", str(manifest), "--dest", str(tmp_path / "d"), "--check")
        assert p.returncode == 1 and p.stderr.strip() == f"fetch_corpus: error: {manifest}: {words}", p.stderr


def test_repository_manifest_describes_the_corpus() -> None:
    """The manifest in the repository lists the whole corpus by commit and sha256, and the
    shared copy (where present) verifies against it file by file."""
    with open(REPO_MANIFEST, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 126
    assert {r["file"].split("/")[0] for r in rows} == {"benign", "attack"}
    p = _run("--manifest", str(REPO_MANIFEST), "--dest", "/nonexistent", "--check")
    assert p.returncode == 1 and "126 files: 0 already present and verified, 0 fetched and verified, 126 failed" \
        in p.stderr  # the rows themselves parse: only the files are missing
    if not (REAL / "MANIFEST.tsv").is_file():
        pytest.skip(f"the real corpus is not at {REAL}: cannot verify its files against the manifest")
    p = _run("--manifest", str(REPO_MANIFEST), "--dest", str(REAL), "--check")
    assert p.returncode == 0, p.stderr
    assert "126 files: 126 already present and verified" in p.stderr
