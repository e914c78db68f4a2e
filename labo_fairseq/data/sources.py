"""Upstream corpus files (URL + pinned sha256) and the step that fetches and verifies them.

Every file a pair needs is a :class:`SourceFile`: where it sits in a local mirror (e.g.
``../shared/corpora``), where it comes from upstream, and its sha256. Offline, :func:`fetch`
reads the mirror; online it downloads into ``<data-dir>/downloads``. Either way the bytes are
checked against the pinned sha256, so a corrupt or different file fails with a clear error.

Files whose checksum could not be pinned (the IWSLT/WMT training archives, which the offline
mirror lacks) are *trust-on-first-use*: the sha256 of the first copy seen is recorded in
``<data-dir>/downloads/SHA256SUMS.json`` and every later use is verified against it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class DataError(RuntimeError):
    """A corpus file is missing, corrupt or does not match its checksum."""


MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
MULTI30K_URL = f"https://github.com/multi30k/dataset/raw/{MULTI30K_COMMIT}/data/task1/raw/{{name}}"
MULTI30K_SHA256 = {
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "test_2017_flickr.de.gz": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
    "test_2017_flickr.en.gz": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
    "test_2017_flickr.fr.gz": "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496",
    "test_2017_mscoco.de.gz": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
    "test_2017_mscoco.en.gz": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
    "test_2017_mscoco.fr.gz": "754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0",
    "test_2018_flickr.cs.gz": "7d0a9db904f94c554a8c58049a9f3a5357c27f46cc3d710d70cb0b4a2585b8c2",
    "test_2018_flickr.de.gz": "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608",
    "test_2018_flickr.en.gz": "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d",
    "test_2018_flickr.fr.gz": "fb2b83fcceb937a4f7e3e93c1c51c22aba92f1e342391e6b5ba392b16a920501",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
}
MULTI30K_LINES = {
    "train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000,
    "test_2017_mscoco": 461, "test_2018_flickr": 1071,
}

# manythings.org rebuilds deu-eng.zip from Tatoeba regularly; the pinned copy is the 2018-05-13
# export, committed to a public GitHub repository at TATOEBA_COMMIT (see the mirror's
# UPSTREAM-COMMIT). A fresh manythings.org download is a newer export and fails the checksum.
TATOEBA_COMMIT = "de48b7027f7318d77010a6e08ed928c10748c23d"
TATOEBA_URL = "https://www.manythings.org/anki/deu-eng.zip"
TATOEBA_SHA256 = "b7688f84f99fa33c17397c14d8bd9cef1fdeb2ee0bf50074767023aee8926e28"
TATOEBA_PAIRS = 169813

# Training archives of the paper corpora, as fetched by fairseq's examples/translation
# prepare-iwslt14.sh and prepare-wmt14en2de.sh; IWSLT'17 from the WIT3 2017-01-trnted release
# ({pair} is the non-English language then "-en"). Not in the offline mirror, so their
# checksums are trust-on-first-use (sha256=None).
PAPER_URLS = {
    "iwslt14": ["http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"],
    "iwslt17": ["https://wit3.fbk.eu/archive/2017-01-trnted/texts/{foreign}/en/{foreign}-en.tgz"],
    "wmt14": [
        "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz",
        "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz",
        "http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz",
        "http://data.statmt.org/wmt17/translation-task/dev.tgz",
        "http://statmt.org/wmt14/test-full.tgz",
    ],
}


@dataclass(frozen=True)
class SourceFile:
    """One upstream file: its path inside a mirror, its URL and its sha256 (None: TOFU)."""

    mirror_path: str
    url: str
    sha256: str | None


def multi30k_file(split: str, lang: str) -> SourceFile:
    """The gzipped raw Multi30k Task 1 file for ``split`` and ``lang``."""
    name = f"{split}.{lang}.gz"
    if name not in MULTI30K_SHA256:
        raise DataError(f"Multi30k has no file {name}; known: {', '.join(sorted(MULTI30K_SHA256))}")
    return SourceFile(f"multi30k/raw/{name}", MULTI30K_URL.format(name=name), MULTI30K_SHA256[name])


def tatoeba_file() -> SourceFile:
    """The 2018-05-13 manythings.org Tatoeba German-English zip."""
    return SourceFile("tatoeba-deu-eng/deu-eng.zip", TATOEBA_URL, TATOEBA_SHA256)


def paper_files(corpus: str, source: str, target: str) -> list[SourceFile]:
    """Training archives of a paper corpus (iwslt14, iwslt17, wmt14); checksums are TOFU."""
    foreign = source if target == "en" else target
    urls = [url.format(foreign=foreign) for url in PAPER_URLS[corpus]]
    return [SourceFile(f"{corpus}/{url.rsplit('/', 1)[1]}", url, None) for url in urls]


def sha256sum(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(source: SourceFile, mirror: Path | None, download_dir: Path) -> tuple[Path, str]:
    """Return a verified local copy of ``source`` and its sha256.

    With ``mirror`` the file is read in place from ``mirror/<mirror_path>``; without it the file
    is downloaded (once) into ``download_dir/<mirror_path>``. Raises DataError naming the file
    and the fix when it is missing or its sha256 differs from the pinned (or first-seen) one.
    """
    if mirror is not None:
        path = mirror / source.mirror_path
        if not path.is_file():
            raise DataError(
                f"{path} is missing from the mirror {mirror}. Copy it there from {source.url}, "
                "or run with --download on a machine with internet access."
            )
    else:
        path = download_dir / source.mirror_path
        if not path.is_file():
            _download(source.url, path)
    return path, _verify(path, source, download_dir)


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url}: {err}. Without internet, pass --mirror DIR "
                        "holding a copy of the corpus files.") from err
    os.replace(tmp, dest)


def _verify(path: Path, source: SourceFile, download_dir: Path) -> str:
    actual = sha256sum(path)
    expected = source.sha256
    if expected is None:
        expected = _trust_on_first_use(download_dir, source.url, actual)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {expected}. The file is "
            f"corrupt or a different version; replace it with a fresh copy of {source.url}."
        )
    return actual


def _trust_on_first_use(download_dir: Path, url: str, actual: str) -> str:
    sums_path = download_dir / "SHA256SUMS.json"
    sums = json.loads(sums_path.read_text()) if sums_path.is_file() else {}
    if url not in sums:
        sums[url] = actual
        download_dir.mkdir(parents=True, exist_ok=True)
        tmp = sums_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sums, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, sums_path)
    return sums[url]
