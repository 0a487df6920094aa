"""K-means units: apply == brute force, dedup/expand, tags, safetensors, safe import of foreign quantizers."""
import os

import joblib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import MiniBatchKMeans

from most_speech.audio.kmeans import (KMeansQuantizer, KmTagMismatch, check_km_tag, dedup, expand,
                                      learn_kmeans, load_foreign_centroids, make_km_tag, prepare_frames,
                                      sample_frames)
from most_speech.audio.safe_load import UnsafePickleError


def test_apply_equals_brute_force_nearest_centroid():
    gen = torch.Generator().manual_seed(0)
    centroids = torch.randn(50, 16, generator=gen)
    feats = torch.randn(3, 700, 16, generator=gen) * 1.5
    km = KMeansQuantizer(centroids, "toy", 3)
    units = km(feats, batch_frames=256)  # several matmul batches
    assert units.shape == (3, 700) and units.dtype == torch.long
    d = ((feats.double()[..., None, :] - centroids.double()) ** 2).sum(-1)  # [3, 700, 50] exact distances
    brute = d.argmin(-1)
    chosen = d.gather(-1, units[..., None])[..., 0]
    assert torch.all(chosen <= d.min(-1).values + 1e-6)  # never a farther centroid
    assert (units == brute).float().mean().item() == 1.0


@pytest.fixture(scope="module")
def fitted():
    x = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
    return x, MiniBatchKMeans(n_clusters=20, random_state=0, n_init=1, batch_size=256, max_iter=3).fit(x)


def test_apply_matches_sklearn_predict(fitted):
    x, sk = fitted
    km = KMeansQuantizer(sk.cluster_centers_, "toy", 1)
    assert np.array_equal(km(torch.from_numpy(x)).numpy(), sk.predict(x))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=60))
def test_dedup_round_trip(seq):
    units, durs = dedup(seq)
    assert expand(units, durs).tolist() == seq
    assert bool((durs > 0).all()) and int(durs.sum()) == len(seq)
    assert bool((units[1:] != units[:-1]).all())  # no two equal neighbours left


def test_expand_rejects_mismatch():
    with pytest.raises(ValueError):
        expand([1, 2], [3])


def test_km_tag_and_safetensors_round_trip(tmp_path):
    c = np.random.default_rng(1).normal(size=(500, 12)).astype(np.float32)
    km = KMeansQuantizer(c, "hubert_base", 11)
    assert km.km_tag.startswith("hubert_base-L11-km500-") and len(km.km_tag.rsplit("-", 1)[1]) == 8
    c2 = c.copy()
    c2[0, 0] += 1e-3
    assert make_km_tag("hubert_base", 11, c2) != km.km_tag  # fingerprint follows the centroids
    km.save(tmp_path / "km.safetensors")
    back = KMeansQuantizer.load(tmp_path / "km.safetensors", device="cpu")
    assert back.km_tag == km.km_tag and back.layer == 11 and back.encoder == "hubert_base"
    assert torch.equal(back.centroids, km.centroids)


def test_input_transform_is_saved_tagged_and_applied_per_utterance(tmp_path):
    rng = np.random.default_rng(2)
    utt = rng.normal(size=(9, 4)).astype(np.float32)
    frames = prepare_frames(utt, "utterance", 3)
    assert frames.shape == (3, 12)
    km = KMeansQuantizer(rng.normal(size=(5, 12)).astype(np.float32), "fbank", None, "utterance", 3)
    plain = KMeansQuantizer(km.centroids, "fbank", None)
    assert km.km_tag != plain.km_tag and km.dim == 4 and plain.dim == 12
    units = km(torch.from_numpy(utt))
    assert units.tolist() == plain(torch.from_numpy(frames)).tolist()
    # a speaker- or level-dependent offset and scale does not change normalised units
    assert km(torch.from_numpy(utt * 3.0 + 16.0)).tolist() == units.tolist()
    km.save(tmp_path / "km.safetensors")
    back = KMeansQuantizer.load(tmp_path / "km.safetensors", device="cpu")
    assert (back.km_tag, back.feature_norm, back.frame_stack) == (km.km_tag, "utterance", 3)
    with pytest.raises(ValueError, match="one utterance"):
        km(torch.from_numpy(np.stack([utt, utt])))
    with pytest.raises(ValueError, match="frame_stack"):
        KMeansQuantizer(np.zeros((2, 5), np.float32), "fbank", None, frame_stack=2)


def test_km_tag_mismatch_is_refused_clearly():
    check_km_tag("hubert_base-L11-km500-1a2b3c4d", "hubert_base-L11-km500-1a2b3c4d", "vocoder")
    with pytest.raises(KmTagMismatch) as err:
        check_km_tag("hubert_base-L11-km500-1a2b3c4d", "mhubert_25hz-L11-km500-99999999", "vocoder")
    assert str(err.value) == ("units were made with km_tag mhubert_25hz-L11-km500-99999999 but the vocoder "
                              "expects hubert_base-L11-km500-1a2b3c4d")


def test_learn_kmeans_finds_clusters():
    rng = np.random.default_rng(0)
    means = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    x = np.concatenate([rng.normal(m, 0.3, (300, 2)) for m in means]).astype(np.float32)
    sample = sample_frames(np.array_split(x, 9), max_frames=600, total_frames=900, seed=0)
    assert 450 < sample.shape[0] <= 600
    km = learn_kmeans(sample, 3, "toy", 2, seed=0, n_init=2, batch_size=128, max_iter=3)
    found = km.centroids.numpy()
    assert all(np.min(np.linalg.norm(found - m, axis=1)) < 0.5 for m in means)
    again = learn_kmeans(sample, 3, "toy", 2, seed=0, n_init=2, batch_size=128, max_iter=3)
    assert again.km_tag == km.km_tag  # seeded


@pytest.mark.parametrize("style", ["joblib", "joblib_compressed", "spiritlm_torch"])
def test_import_foreign_quantizer(tmp_path, style, fitted):
    x, sk = fitted
    path = tmp_path / ("L11_quantizer_500.pt" if style == "spiritlm_torch" else "km.bin")
    if style == "spiritlm_torch":
        torch.save({"cluster_centers": sk.cluster_centers_, "n_clusters": 20}, path)
    else:
        joblib.dump(sk, path, compress=3 if style == "joblib_compressed" else 0)
    km = KMeansQuantizer.from_fairseq(path, "hubert_base", 11)
    assert np.array_equal(km.centroids.numpy(), sk.cluster_centers_.astype(np.float32))
    assert np.array_equal(km(torch.from_numpy(x)).numpy(), sk.predict(x))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _NotKMeans:
    def __init__(self):
        self.cluster_centers_ = np.zeros((2, 2))


@pytest.mark.parametrize("payload", ["evil", "other_class", "object_array", "evil_torch"])
def test_malicious_quantizer_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "km.bin"
    if payload == "evil":
        joblib.dump({"km": _Evil(marker)}, path)
    elif payload == "other_class":
        joblib.dump(_NotKMeans(), path)
    elif payload == "object_array":
        joblib.dump(np.array([_Evil(marker), 1], dtype=object), path)
    else:
        torch.save({"cluster_centers": np.zeros((2, 2)), "x": _Evil(marker)}, path)
    with pytest.raises(UnsafePickleError, match="km.bin"):
        load_foreign_centroids(path)
    assert not marker.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_apply_on_gpu_matches_cpu(tmp_path):
    c = torch.randn(500, 64)
    KMeansQuantizer(c, "toy", 1).save(tmp_path / "km.safetensors")
    km_gpu = KMeansQuantizer.load(tmp_path / "km.safetensors")  # "auto" picks CUDA
    assert km_gpu.centroids.is_cuda
    x = torch.randn(5000, 64)
    cpu = KMeansQuantizer(c, "toy", 1)(x)
    assert (km_gpu(x).cpu() == cpu).float().mean().item() > 0.999
