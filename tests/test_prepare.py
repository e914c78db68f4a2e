"""Tests for data preparation: slice prepare + reuse, Tatoeba split, and clear failures."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from labo_fairseq.data import prepare as prep
from labo_fairseq.data import sources
from labo_fairseq.data.splits import split_pairs, subsample
from labo_fairseq.data.text import read_tatoeba_pairs
from labo_fairseq.pairs import list_pairs, load_pair_config

MIRROR = prep.DEFAULT_MIRROR
needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason=f"no corpus mirror at {MIRROR}")
SLICE = {"max_train_lines": 300, "vocab_size": 300}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with (size, mtime_ns)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _tmp_mirror(tmp_path: Path) -> Path:
    """A writable copy of the Multi30k part of the mirror."""
    mirror = tmp_path / "mirror"
    shutil.copytree(MIRROR / "multi30k", mirror / "multi30k")
    for path in mirror.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return mirror


def test_all_configs_load_and_match_file_names():
    pairs = list_pairs()
    assert {"multi30k-en-de", "tatoeba-de-en", "iwslt14-de-en", "wmt14-en-de"} <= set(pairs)
    for pair in pairs:
        cfg = load_pair_config(pair)
        assert cfg.pair == pair
        assert pair.endswith(f"{cfg.source}-{cfg.target}")


def test_config_train_args_parse_with_fairseq():
    from fairseq import options
    for pair in list_pairs():
        cfg = load_pair_config(pair)
        for method in cfg.methods:
            argv = ["data-bin", "--user-dir", "labo_fairseq", *cfg.method_args(method)]
            args = options.parse_args_and_arch(options.get_training_parser(), argv)
            assert args.criterion == cfg.methods[method][1]


def test_unknown_pair_lists_known_pairs(tmp_path, capsys):
    assert prep.main(["no-such-pair", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown pair 'no-such-pair'" in err and "multi30k-en-de" in err
    assert _snapshot(tmp_path) == {}


@pytest.fixture(scope="module")
def slice_data_dir(tmp_path_factory) -> Path:
    """A data dir holding a 300-line multi30k-en-de slice, prepared once for this module."""
    if not MIRROR.is_dir():
        pytest.skip(f"no corpus mirror at {MIRROR}")
    data_dir = tmp_path_factory.mktemp("data")
    prep.prepare("multi30k-en-de", data_dir, MIRROR, **SLICE)
    return data_dir


def test_slice_prepare_then_reuse(slice_data_dir):
    pair_dir = slice_data_dir / "multi30k-en-de"
    for rel in ("bin/dict.en.txt", "bin/dict.de.txt", "bin/train.en-de.en.bin", "spm/spm.model",
                "raw/test.de", "manifest.json"):
        assert (pair_dir / rel).is_file(), rel
    manifest = prep.Manifest(pair_dir, prep.STAGES).data
    assert set(manifest["stages"]) == set(prep.STAGES)
    assert manifest["line_counts"] == {"train": 300, "valid": 1014, "test": 1000}
    assert manifest["options"]["max_train_lines"] == 300
    assert (pair_dir / "raw/train.en").read_text().count("\n") == 300
    before = _snapshot(pair_dir)

    prep.prepare("multi30k-en-de", slice_data_dir, MIRROR, **SLICE)
    assert _snapshot(pair_dir) == before  # nothing re-encoded, manifest untouched

    with pytest.raises(sources.DataError, match="prepared with options"):
        prep.prepare("multi30k-en-de", slice_data_dir, MIRROR, max_train_lines=200, vocab_size=300)
    assert _snapshot(pair_dir) == before


def test_half_written_stage_is_redone(slice_data_dir, tmp_path):
    shutil.copytree(slice_data_dir, tmp_path / "data")
    pair_dir = tmp_path / "data" / "multi30k-en-de"
    manifest = prep.Manifest(pair_dir, prep.STAGES)
    manifest.data["stages"].pop("spm_enc")  # as if killed between rename and stamp
    manifest.update()
    (pair_dir / "bin.tmp").mkdir()  # leftover of a killed binarization
    raw = (pair_dir / "raw/train.en").stat().st_mtime_ns
    encoded = (pair_dir / "spm_enc/train.en").stat().st_mtime_ns
    prep.prepare("multi30k-en-de", tmp_path / "data", MIRROR, **SLICE)
    assert (pair_dir / "raw/train.en").stat().st_mtime_ns == raw
    assert (pair_dir / "spm_enc/train.en").stat().st_mtime_ns != encoded
    assert not (pair_dir / "bin.tmp").exists()
    assert set(prep.Manifest(pair_dir, prep.STAGES).data["stages"]) == set(prep.STAGES)


def test_nonexistent_mirror_fails_clearly(tmp_path, capsys):
    missing = tmp_path / "no-mirror"
    code = prep.main(["multi30k-en-de", "--mirror", str(missing), "--data-dir", str(tmp_path / "d")])
    assert code == 2
    assert f"mirror directory {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@needs_mirror
def test_missing_file_in_mirror_names_it(tmp_path):
    mirror = _tmp_mirror(tmp_path)
    (mirror / "multi30k/raw/val.de.gz").unlink()
    with pytest.raises(sources.DataError, match=r"val\.de\.gz is missing from the mirror"):
        prep.prepare("multi30k-en-de", tmp_path / "d", mirror, **SLICE)
    assert _snapshot(tmp_path / "d") == {}


def test_checksum_mismatch_fails_and_changes_nothing(slice_data_dir, tmp_path):
    mirror = _tmp_mirror(tmp_path)
    target = mirror / "multi30k/raw/test_2016_flickr.de.gz"
    lines = gzip.decompress(target.read_bytes()).decode().split("\n")
    lines[0] = "Ein manipulierter Satz."
    target.write_bytes(gzip.compress("\n".join(lines).encode()))
    for data_dir in (tmp_path / "fresh", slice_data_dir):  # nothing yet, and fully prepared
        before = _snapshot(data_dir)
        with pytest.raises(sources.DataError, match=r"checksum mismatch for .*test_2016_flickr\.de\.gz"):
            prep.prepare("multi30k-en-de", data_dir, mirror, **SLICE)
        assert _snapshot(data_dir) == before


@needs_mirror
def test_corrupt_gzip_fails_clearly(tmp_path, monkeypatch):
    mirror = _tmp_mirror(tmp_path)
    target = mirror / "multi30k/raw/train.en.gz"
    target.write_bytes(target.read_bytes()[:5000])  # truncated download
    with pytest.raises(sources.DataError, match="checksum mismatch"):
        prep.prepare("multi30k-en-de", tmp_path / "d", mirror, **SLICE)
    # Even if its checksum were accepted, the truncated gzip itself is reported by name.
    monkeypatch.setitem(sources.MULTI30K_SHA256, "train.en.gz", sources.sha256sum(target))
    with pytest.raises(sources.DataError, match=r"train\.en\.gz is not a valid gzipped"):
        prep.prepare("multi30k-en-de", tmp_path / "d", mirror, **SLICE)
    assert not (tmp_path / "d/multi30k-en-de/raw").exists()
    assert not (tmp_path / "d/multi30k-en-de/raw.tmp").exists()


def test_paper_pair_offline_names_missing_training_data(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with pytest.raises(sources.DataError, match=r"iwslt14/de-en\.tgz is missing from the mirror"):
        prep.prepare("iwslt14-de-en", tmp_path / "d", mirror)


def test_trust_on_first_use_records_then_verifies(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "x").mkdir(parents=True)
    (mirror / "x/a.tgz").write_bytes(b"first")
    source = sources.SourceFile("x/a.tgz", "https://example.org/a.tgz", None)
    downloads = tmp_path / "downloads"
    _, digest = sources.fetch(source, mirror, downloads)
    assert (downloads / "SHA256SUMS.json").read_text().count(digest) == 1
    (mirror / "x/a.tgz").write_bytes(b"second")
    with pytest.raises(sources.DataError, match="checksum mismatch"):
        sources.fetch(source, mirror, downloads)


def _toy_pairs() -> list[tuple[str, str]]:
    pairs = [(f"e{i}", f"g{i}") for i in range(300)]
    pairs += [("e1", "g-alt"), ("e-alt", "g-alt"), ("e2", "g2"), ("e5", "g7")]  # shared + dup
    return pairs


def _assert_disjoint(split: dict[str, list[tuple[str, str]]]) -> None:
    for side in (0, 1):
        seen: dict[str, str] = {}
        for name, pairs in split.items():
            for pair in pairs:
                assert seen.setdefault(pair[side], name) == name, (pair, name, seen[pair[side]])


def test_split_is_disjoint_deduplicated_and_deterministic():
    split = split_pairs(_toy_pairs(), test_size=20, valid_size=20)
    _assert_disjoint(split)
    assert sum(map(len, split.values())) == len(set(_toy_pairs()))
    assert len(split["test"]) >= 20 and len(split["valid"]) >= 20
    assert split == split_pairs(list(_toy_pairs()), test_size=20, valid_size=20)


def test_subsample_is_fixed_and_keeps_order():
    pairs = _toy_pairs()
    chosen = subsample(pairs, 50)
    assert len(chosen) == 50 and chosen == subsample(list(reversed(pairs)), 50)[::-1]
    assert chosen == [p for p in pairs if p in set(chosen)]


@needs_mirror
def test_tatoeba_split_on_real_data():
    pairs = read_tatoeba_pairs(MIRROR / "tatoeba-deu-eng/deu-eng.zip")
    split = split_pairs(pairs)
    _assert_disjoint(split)
    assert 2000 <= len(split["test"]) <= 2050 and 2000 <= len(split["valid"]) <= 2050
    assert split == split_pairs(pairs)


def _tgz(path: Path, files: dict[str, str]) -> Path:
    import io
    import tarfile
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _train_tags(sentences: list[str]) -> str:
    head = "<url>http://x</url>\n<keywords>talks</keywords>\n<talkid>1</talkid>\n"
    return head + "<title>Ein Titel</title>\n" + "".join(f"{s}\n" for s in sentences)


def _xml(segments: list[str]) -> str:
    body = "".join(f'<seg id="{i}"> {s} </seg>\n' for i, s in enumerate(segments, 1))
    return f"<mteval>\n<doc>\n{body}</doc>\n</mteval>\n"


def test_iwslt14_extraction_follows_fairseq_recipe(tmp_path):
    from labo_fairseq.data.iwslt import IWSLT14_TEST, read_iwslt14
    de = [f"Satz Nummer {i}, gut!" for i in range(1, 48)] + ["Zu kurz"]
    en = [f"Sentence number {i}, good!" for i in range(1, 48)] + ["Far too long for its partner"]
    files = {"de-en/train.tags.de-en.de": _train_tags(de), "de-en/train.tags.de-en.en": _train_tags(en)}
    for name in IWSLT14_TEST:
        for lang, text in (("de", f"{name} Das ist gut."), ("en", f"{name} That’s it.")):
            files[f"de-en/IWSLT14.{name}.de-en.{lang}.xml"] = _xml([text])
    splits = read_iwslt14(_tgz(tmp_path / "de-en.tgz", files), "de", "en")
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert len(train[0]) + len(valid[0]) == 48  # title kept, metadata dropped, 1 pair cleaned
    assert valid[1] == ["sentence number 22 , good !", "sentence number 45 , good !"]
    assert train[0][0] == "ein titel" and "satz nummer 22 , gut !" not in train[0]
    assert test == ([f"{name.lower()} das ist gut ." for name in IWSLT14_TEST],
                    [f"{name.lower()} that &apos;s it ." for name in IWSLT14_TEST])
    assert read_iwslt14(tmp_path / "de-en.tgz", "en", "de")["valid"] == (valid[1], valid[0])


def test_iwslt17_extraction_keeps_cased_text(tmp_path):
    from labo_fairseq.data.iwslt import read_iwslt17
    files = {"fr-en/train.tags.fr-en.fr": _train_tags(["Bonjour, le monde !", "", "Merci."]),
             "fr-en/train.tags.fr-en.en": _train_tags(["Hello, world!", "Dropped.", "Thanks."])}
    for name in ("dev2010", "tst2015"):
        files[f"fr-en/IWSLT17.TED.{name}.fr-en.fr.xml"] = _xml([f"{name} C’est ça."])
        files[f"fr-en/IWSLT17.TED.{name}.fr-en.en.xml"] = _xml([f"{name} That’s it."])
    archive = _tgz(tmp_path / "fr-en.tgz", files)
    splits = read_iwslt17(archive, "en", "fr", "dev2010", "tst2015")
    assert splits["train"] == (["Ein Titel", "Hello, world!", "Thanks."],
                               ["Ein Titel", "Bonjour, le monde !", "Merci."])
    assert splits["test"] == (["tst2015 That's it."], ["tst2015 C'est ça."])


def test_wmt14_extraction(tmp_path):
    from labo_fairseq.data.wmt import TEST_SGM, TRAIN_MEMBERS, read_wmt14
    archives = {}
    for archive, stem in TRAIN_MEMBERS.items():
        files = {f"training/{stem}.en": "A  house.\nToo many words here for one\n",
                 f"training/{stem}.de": "Ein Haus.\nZu\n"}
        archives[archive] = _tgz(tmp_path / archive, files)
    archives["dev.tgz"] = _tgz(tmp_path / "dev.tgz", {"dev/newstest2013.en": "Dev.\n",
                                                      "dev/newstest2013.de": "Entw.\n"})
    sgm = {lang: f'<srcset>\n<doc>\n<seg id="1">Test {lang}.</seg>\n</doc>\n</srcset>\n'
           for lang in TEST_SGM}
    archives["test-full.tgz"] = _tgz(tmp_path / "test-full.tgz",
                                     {f"test-full/{TEST_SGM[lang]}": sgm[lang] for lang in TEST_SGM})
    splits = read_wmt14(archives, "de", "en")
    assert splits["train"] == (["Ein Haus."] * 3, ["A house."] * 3)
    assert splits["valid"] == (["Entw."], ["Dev."])
    assert splits["test"] == (["Test de."], ["Test en."])
