"""Feature / unit stores: by-id round trips, sharding, atomic shards, km_tag headers."""
import random

import numpy as np
import pytest

from most_speech.audio.kmeans import KmTagMismatch
from most_speech.audio.store import (FeatureReader, FeatureWriter, MissingUtterance, UnitReader, UnitWriter,
                                     km_tag_path, shard_complete, shard_ids, shard_stem)


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return {f"utt{i:03d}": rng.normal(size=(int(rng.integers(1, 40)), 5)).astype(np.float32) for i in range(n)}


def test_feature_round_trip_by_id_after_shuffling(tmp_path):
    data = _data()
    ids = list(data)
    random.Random(3).shuffle(ids)
    nj = 3
    for rank in range(nj):  # shards written in shuffled order within each shard
        mine = set(shard_ids(data, nj, rank))
        with FeatureWriter(tmp_path / shard_stem("feats", nj, rank)) as w:
            for u in ids:
                if u in mine:
                    w.write(u, data[u])
    reader = FeatureReader(tmp_path)
    assert sorted(reader) == sorted(data) and len(reader) == len(data)
    for u in reversed(ids):
        assert np.array_equal(reader[u], data[u]) and reader[u].dtype == np.float32
        assert reader.num_frames(u) == data[u].shape[0]
    with pytest.raises(MissingUtterance, match=r"'nope' is not in feature store .*"):
        reader["nope"]
    with pytest.raises(KeyError):  # MissingUtterance is a KeyError: Mapping semantics hold
        reader["nope"]
    assert reader.get("nope") is None


def test_shard_ids_partition_sorted_ids():
    ids = [f"u{i}" for i in range(10)]
    random.Random(0).shuffle(ids)
    shards = [shard_ids(ids, 3, r) for r in range(3)]
    assert sorted(sum(shards, [])) == sorted(ids)
    assert shards[1] == sorted(ids)[1::3]
    with pytest.raises(ValueError):
        shard_ids(ids, 3, 3)


def test_interrupted_shard_leaves_no_scp(tmp_path):
    stem = tmp_path / shard_stem("feats", 2, 0)
    with pytest.raises(KeyboardInterrupt):
        with FeatureWriter(stem) as w:
            w.write("a", np.ones((2, 3)))
            raise KeyboardInterrupt
    assert not shard_complete(stem) and list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no feature store"):
        FeatureReader(tmp_path)
    with FeatureWriter(stem) as w:
        w.write("a", np.ones((2, 3)))
    assert shard_complete(stem)


def test_writer_rejects_bad_input(tmp_path):
    with FeatureWriter(tmp_path / "feats.0-of-1") as w:
        with pytest.raises(ValueError, match="whitespace"):
            w.write("a b", np.ones((1, 1)))
        with pytest.raises(ValueError, match="'x'.*matrix"):
            w.write("x", np.ones(3))
        w.write("y", np.ones((1, 1)))
        with pytest.raises(ValueError, match="'y' written twice"):
            w.write("y", np.ones((1, 1)))
    (tmp_path / "feats.1-of-2.scp").write_text(f"y {tmp_path}/feats.0-of-1.ark:2\n")
    with pytest.raises(ValueError, match="'y' appears twice"):
        FeatureReader(tmp_path)


def test_units_round_trip_and_km_tag_header(tmp_path):
    rng = np.random.default_rng(0)
    units = {f"s{i}": rng.integers(0, 500, size=int(rng.integers(1, 30))) for i in range(9)}
    tag = "hubert_base-L11-km500-1a2b3c4d"
    out = tmp_path / "units.jsonl"
    ids = list(units)
    random.Random(1).shuffle(ids)
    for rank in range(2):
        shard = tmp_path / f"{shard_stem('units', 2, rank)}.jsonl"
        with UnitWriter(shard, tag) as w:
            for u in ids:
                if u in shard_ids(units, 2, rank):
                    w.write(u, units[u])
    assert km_tag_path(out).read_text().strip() == tag
    reader = UnitReader(out, expected_km_tag=tag)
    assert reader.km_tag == tag and len(reader) == 9
    for u in ids:
        assert np.array_equal(reader[u], units[u])
    with pytest.raises(MissingUtterance, match="'zz' is not in unit store"):
        reader["zz"]
    with pytest.raises(KmTagMismatch, match=f"units were made with km_tag {tag} but the consumer expects other"):
        UnitReader(out, expected_km_tag="other")
    with pytest.raises(KmTagMismatch):  # one store never mixes k-means models
        UnitWriter(tmp_path / "units.2-of-3.jsonl", "mhubert-L11-km500-00000000")
