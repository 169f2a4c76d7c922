#!/usr/bin/env python3
"""Fetch the real-capture training corpus from its public sources, checking every sha256.

The corpus (126 captures, ~66 MB, from public GitHub repositories) stays outside the
repository; scripts/real-corpus.tsv lists every file: where it goes (`file`), the
repository (`repo`), the commit and path it was taken from, and its sha256. This
script downloads each file at that commit, keeps it only if its sha256 matches, and
writes the manifest beside the files, so that

    python scripts/fetch_corpus.py                       # into ../shared/data/real
    ids-trainer bundle --out MODEL                       # rebuild the bundled model from it

works on a clean clone (with --dest DIR elsewhere: `ids-trainer bundle --real DIR/MANIFEST.tsv`).

A `path` may name a member of an archive, `ARCHIVE.zip!/MEMBER`, or a file to
gunzip, `FILE.gz (gunzipped)`, as some captures were published that way. Files stored
with Git LFS are fetched from GitHub's media host when the raw host answers with an LFS
pointer. Files already present with the right sha256 are not fetched again.

    --check        no network: verify the files under --dest against the manifest
    --raw-url T    URL template for a file at a commit ({repo}, {commit}, {path})
    --lfs-url T    the same for Git LFS content

Exit status: 0 when every file is present and verified, 1 otherwise (each failure is one
line on stderr naming the file; nothing that fails its check is kept).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "scripts" / "real-corpus.tsv"
DEST = ROOT.parent / "shared" / "data" / "real"  # where the trainer and the tests look by default
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
LFS_URL = "https://media.githubusercontent.com/media/{repo}/{commit}/{path}"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
GUNZIP = " (gunzipped)"


class FetchError(Exception):
    """One file could not be fetched or did not verify."""


@dataclass(frozen=True)
class Entry:
    """One row of the manifest."""

    line: int
    file: str  # where it goes, relative to the destination
    repo: str
    commit: str
    path: str  # in the repository at that commit, possibly ARCHIVE.zip!/MEMBER or "X.gz (gunzipped)"
    sha256: str

    @property
    def source(self) -> str:
        """The file in the repository that is downloaded (the archive for a member)."""
        p = self.path.removesuffix(GUNZIP)
        return p.split("!/", 1)[0]


def read_manifest(path: Path) -> list[Entry]:
    """The manifest's rows, each checked for the columns a fetch needs."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as e:
        raise SystemExit(f"fetch_corpus: error: {path}: cannot read: {e.strerror}") from None
    out = []
    for k, r in enumerate(rows, start=2):
        missing = [c for c in ("file", "repo", "commit", "path", "sha256") if not (r.get(c) or "").strip()]
        if missing:
            raise SystemExit(f"fetch_corpus: error: {path}: line {k}: no {', '.join(missing)}")
        if not re.fullmatch(r"[0-9a-f]{40}", r["commit"]):
            raise SystemExit(f"fetch_corpus: error: {path}: line {k}: commit {r['commit']!r} is not a full git hash")
        if not re.fullmatch(r"[0-9a-f]{64}", r["sha256"]):
            raise SystemExit(f"fetch_corpus: error: {path}: line {k}: sha256 {r['sha256']!r} is not 64 hex digits")
        f = Path(r["file"])
        if f.is_absolute() or ".." in f.parts:
            raise SystemExit(f"fetch_corpus: error: {path}: line {k}: file {r['file']!r} must stay inside --dest")
        out.append(Entry(k, r["file"], r["repo"], r["commit"], r["path"], r["sha256"]))
    if not out:
        raise SystemExit(f"fetch_corpus: error: {path}: no files listed")
    return out


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _get(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "ids-daemon fetch_corpus"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"{url}: {getattr(e, 'reason', e)}") from None


class Fetcher:
    """Downloads repository files at a commit (each source once: archives hold many members)."""

    def __init__(self, raw_url: str, lfs_url: str, timeout: float):
        self.raw_url, self.lfs_url, self.timeout = raw_url, lfs_url, timeout
        self._cache: dict[tuple[str, str, str], bytes] = {}

    def _url(self, template: str, e: Entry) -> str:
        return template.format(repo=e.repo, commit=e.commit, path=urllib.parse.quote(e.source))

    def source(self, e: Entry) -> bytes:
        key = (e.repo, e.commit, e.source)
        if key not in self._cache:
            data = _get(self._url(self.raw_url, e), self.timeout)
            if data.startswith(LFS_POINTER):  # the raw host serves the pointer, not the content
                data = _get(self._url(self.lfs_url, e), self.timeout)
            self._cache[key] = data
        return self._cache[key]

    def content(self, e: Entry) -> bytes:
        """The file's bytes as the manifest means them (member extracted, gunzipped)."""
        data = self.source(e)
        path = e.path.removesuffix(GUNZIP)
        if "!/" in path:
            member = path.split("!/", 1)[1]
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    data = z.read(member)
            except KeyError:
                raise FetchError(f"{e.source} has no member {member!r}") from None
            except zipfile.BadZipFile:
                raise FetchError(f"{e.source} is not a zip archive") from None
        if e.path.endswith(GUNZIP):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as err:
                raise FetchError(f"{e.source}: cannot gunzip: {err}") from None
        return data


def fetch(entries: list[Entry], dest: Path, fetcher: Fetcher | None) -> tuple[int, int, list[str]]:
    """Each entry into ``dest`` (None: check only). Returns (present, fetched, errors)."""
    present = fetched = 0
    errors: list[str] = []
    for e in entries:
        target = dest / e.file
        if target.is_file():
            got = sha256_of(target)
            if got == e.sha256:
                present += 1
                continue
            if fetcher is None:
                errors.append(f"{e.file}: sha256 {got} differs from the manifest's {e.sha256}")
                continue
        elif fetcher is None:
            errors.append(f"{e.file}: missing")
            continue
        try:
            data = fetcher.content(e)
        except FetchError as err:
            errors.append(f"{e.file}: {e.repo}@{e.commit[:12]} {e.path}: {err}")
            continue
        got = hashlib.sha256(data).hexdigest()
        if got != e.sha256:
            errors.append(f"{e.file}: {e.repo}@{e.commit[:12]} {e.path}: sha256 {got} differs from the "
                          f"manifest's {e.sha256}; not kept")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        part.write_bytes(data)
        part.replace(target)  # only a verified file ever carries the final name
        fetched += 1
        print(f"fetched {e.file} ({len(data):,} bytes)", file=sys.stderr)
    return present, fetched, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help=f"the manifest (default: {MANIFEST.relative_to(ROOT)})")
    ap.add_argument("--dest", type=Path, default=DEST, help="where the corpus goes (default: ../shared/data/real "
                    "beside the repository, where the trainer and the tests look)")
    ap.add_argument("--check", action="store_true", help="no network: verify the files under --dest")
    ap.add_argument("--raw-url", default=RAW_URL, help="URL template of a file at a commit")
    ap.add_argument("--lfs-url", default=LFS_URL, help="URL template of Git LFS content")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per download")
    args = ap.parse_args(argv)
    entries = read_manifest(args.manifest)
    fetcher = None if args.check else Fetcher(args.raw_url, args.lfs_url, args.timeout)
    present, fetched, errors = fetch(entries, args.dest, fetcher)
    for err in errors:
        print(f"fetch_corpus: error: {err}", file=sys.stderr)
    if not args.check and not errors:
        args.dest.mkdir(parents=True, exist_ok=True)
        if args.manifest.resolve() != (args.dest / "MANIFEST.tsv").resolve():
            shutil.copyfile(args.manifest, args.dest / "MANIFEST.tsv")  # what the trainer reads (--real)
    print(f"{len(entries)} files: {present} already present and verified, {fetched} fetched and verified, "
          f"{len(errors)} failed ({args.dest})", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
