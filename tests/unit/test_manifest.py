"""Tests of JSON Lines manifests: validation messages, atomic writes, relocation, filtering, units by id."""
import gzip
import json

import pytest

from most_speech.data.manifest import (FilterStats, Manifest, ManifestError, attach_units, filter_entries,
                                       iter_manifest, merge_manifests, read_manifest, relocate,
                                       to_data_root_path, validate_entry, write_manifest)

UTTS = [{"id": "ls-1-2-0", "audio": "{data_root}/a/1-2-0.flac", "duration": 2.0, "text": "hello", "spk_id": "1",
         "lang": "en", "chapter_id": "2"},
        {"id": "lh-x/y_1", "audio": "{data_root}/b.flac", "start": 12.5, "duration": 7200.0, "text": "Long one."},
        {"id": "smol-0", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"id": "txt-0", "text": "just text"}]


def test_write_read_roundtrip_keeps_extra_fields_and_order(tmp_path):
    path = write_manifest(UTTS, tmp_path / "m.jsonl")
    m = read_manifest(path)
    assert list(m) == [u["id"] for u in UTTS]
    assert m["ls-1-2-0"] == UTTS[0] and m.entries() == UTTS
    assert m.source == str(path)
    gz = write_manifest(UTTS, tmp_path / "m.jsonl.gz")
    with gzip.open(gz, "rt") as f:
        assert json.loads(f.readline())["id"] == "ls-1-2-0"
    assert read_manifest(gz).entries() == UTTS
    assert [e["id"] for e in iter_manifest(path)] == [u["id"] for u in UTTS]


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("lines, match", [
    (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], r"line 2, id 'a': duplicate id \(first on line 1\)"),
    (['{"id": "a", "text": "x"}', '{"id": "b"'], r"line 2: invalid JSON"),
    (['{"text": "x"}'], r"line 1: field 'id' must be"),
    (['{"id": "has space", "text": "x"}'], r"line 1: field 'id'"),
    (['{"id": "a", "audio": "x.flac", "duration": -1.0}'], r"line 1, id 'a': field 'duration' must be >= 0"),
    (['{"id": "a", "audio": "x.flac", "start": 3.0}'], r"line 1, id 'a': a segment with 'start' also needs 'duration'"),
    (['{"id": "a", "audio": "x.flac", "duration": "2"}'], r"line 1, id 'a': field 'duration' must be a finite number"),
    (['{"id": "a", "spk_id": 3, "text": "x"}'], r"line 1, id 'a': field 'spk_id' must be a string"),
    (['{"id": "a", "lang": "en"}'], r"line 1, id 'a': needs at least one of"),
    (['{"id": "a", "text": "x", "units": [1, -2]}'], r"line 1, id 'a': field 'units'"),
    (['{"id": "a", "messages": [{"role": "bot", "content": "x"}]}'], r"line 1, id 'a': messages\[0\] has role 'bot'"),
    (['[1, 2]'], r"line 1: expected a JSON object"),
])
def test_validation_names_file_line_and_id(tmp_path, lines, match):
    path = _write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ManifestError, match=r"bad.jsonl, " + match):
        read_manifest(path)


def test_required_fields_and_blank_lines(tmp_path):
    path = _write_lines(tmp_path / "m.jsonl", ['{"id": "a", "text": "x"}', "", '{"id": "b", "audio": "p"}'])
    assert len(read_manifest(path)) == 2
    with pytest.raises(ManifestError, match="line 1, id 'a': missing required field 'audio'"):
        read_manifest(path, required=["audio"])


def test_write_is_atomic_on_bad_entry(tmp_path):
    path = write_manifest(UTTS[:1], tmp_path / "m.jsonl")
    before = path.read_text()
    with pytest.raises(ManifestError, match="duplicate"):
        write_manifest([UTTS[0], UTTS[0]], path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"], "temporary file left behind"


def test_relocate_and_data_root_paths(tmp_path):
    assert relocate(UTTS[0], "/corpora/LibriSpeech/")["audio"] == "/corpora/LibriSpeech/a/1-2-0.flac"
    assert UTTS[0]["audio"].startswith("{data_root}"), "relocate must not modify its input"
    assert relocate(UTTS[3], "/x") == UTTS[3]
    m = Manifest(UTTS).relocate(tmp_path)
    assert m["lh-x/y_1"]["audio"] == f"{tmp_path}/b.flac"
    assert to_data_root_path(tmp_path / "sub" / "f.wav", tmp_path) == "{data_root}/sub/f.wav"
    with pytest.raises(ManifestError, match="u7: audio .* is not inside data root"):
        to_data_root_path("/elsewhere/f.wav", tmp_path, where="u7")


def test_filter_stats_counts_and_hours():
    kept, stats = filter_entries(UTTS, min_duration=1.0, max_duration=3600.0)
    assert [e["id"] for e in kept] == ["ls-1-2-0"]
    d = stats.as_dict()
    assert d["kept"] == {"count": 1, "hours": 2.0 / 3600}
    assert d["too_long"] == {"count": 1, "hours": 2.0}
    assert d["no_duration"]["count"] == 2
    assert d["total"]["count"] == 4
    assert list(d)[0] == "kept" and list(d)[-1] == "total"
    table = stats.table().splitlines()
    assert table[0].split() == ["reason", "count", "hours"]
    assert any(line.split()[:2] == ["too_long", "1"] for line in table)
    kept_all, stats2 = filter_entries(UTTS + [{"id": "e", "text": "  "}])
    assert len(kept_all) == 4 and stats2.counts == {"kept": 4, "empty_text": 1}
    kept_empty, _ = filter_entries([{"id": "e", "text": ""}], drop_empty_text=False)
    assert len(kept_empty) == 1
    with pytest.raises(ValueError, match="min_duration"):
        filter_entries(UTTS, min_duration=5, max_duration=1)
    assert FilterStats().as_dict() == {"total": {"count": 0, "hours": 0.0}}


def test_attach_units_by_id_not_order():
    store = {"txt-0": [9, 9], "ls-1-2-0": [1, 2, 3]}
    out = attach_units([UTTS[0], UTTS[3]], store, km_tag="hubert_l11_km500")
    assert out[0]["units"] == [1, 2, 3] and out[1]["units"] == [9, 9]
    assert {e["km_tag"] for e in out} == {"hubert_l11_km500"}
    assert "units" not in UTTS[0]
    with pytest.raises(ManifestError, match="'lh-x/y_1': no units"):
        attach_units(UTTS[:2], store, "km")
    assert len(attach_units(UTTS[:2], store, "km", missing="drop")) == 1
    with pytest.raises(ManifestError, match="'ls-1-2-0': entry has km_tag 'old'"):
        attach_units([{**UTTS[0], "km_tag": "old"}], store, "new")


class _TaggedStore(dict):
    km_tag = "mhubert25_l11_km500"


def test_attach_units_takes_the_stores_km_tag():
    out = attach_units([UTTS[3]], _TaggedStore({"txt-0": (4, 5)}))
    assert out[0]["units"] == [4, 5] and out[0]["km_tag"] == "mhubert25_l11_km500"
    with pytest.raises(ValueError, match="no km_tag"):
        attach_units([UTTS[3]], {"txt-0": [1]})


def test_merge_refuses_duplicate_ids_across_corpora():
    assert len(merge_manifests([UTTS[:2], UTTS[2:]])) == 4
    with pytest.raises(ManifestError, match="'txt-0': duplicate"):
        merge_manifests([UTTS, [UTTS[3]]])


def test_validate_entry_returns_entry():
    assert validate_entry(UTTS[1]) is UTTS[1]
    assert Manifest(UTTS).total_hours() == pytest.approx((2.0 + 7200.0) / 3600)
    with pytest.raises(KeyError, match="nope"):
        Manifest(UTTS)["nope"]
