"""Feature augmentation in MoSTBrain: SpeechBrain augmenters on the spliced frames, training batches only."""
import pytest
import speechbrain as sb
import torch
from speechbrain.augment.augmenter import Augmenter
from speechbrain.augment.freq_domain import SpectrogramDrop, Warping

from most_speech.data.templates import AudioSpan


@pytest.fixture
def augmenting_brain(bare_brain):
    """``make(augment)`` -> (a bare brain with that ``feature_augment``, the frames its feature source holds)."""
    def make(augment):
        mats = {"a": torch.randn(30, 8), "b": torch.randn(20, 8)}
        return bare_brain(feature_source=lambda keys: [mats[k].clone() for k in keys], feature_augment=augment), mats
    return make


def _batch():
    ids = torch.ones(2, 4, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": ids, "labels": ids,
            "audio_spans": [[AudioSpan(1, "a")], [AudioSpan(1, "b")]]}


def _specaugment():
    return Augmenter(min_augmentations=2, max_augmentations=2, augmentations=[
        SpectrogramDrop(drop_length_low=2, drop_length_high=5, drop_count_low=2, drop_count_high=2,
                        replace="mean", dim=1),
        Warping(warp_window=2, dim=2)])


def test_augmentation_changes_training_frames_only(augmenting_brain):
    torch.manual_seed(0)
    brain, mats = augmenting_brain(_specaugment())
    train = brain._model_inputs(_batch(), sb.Stage.TRAIN)
    valid = brain._model_inputs(_batch(), sb.Stage.VALID)
    assert train["audio_features"].shape == valid["audio_features"].shape == (2, 30, 8)
    assert train["audio_feature_lengths"].tolist() == [30, 20]
    assert torch.equal(valid["audio_features"][0], mats["a"])
    assert torch.equal(valid["audio_features"][1, :20], mats["b"])
    assert not torch.equal(train["audio_features"][0], mats["a"])


def test_no_augmenter_leaves_frames_alone(augmenting_brain):
    brain, mats = augmenting_brain(None)
    train = brain._model_inputs(_batch(), sb.Stage.TRAIN)
    assert torch.equal(train["audio_features"][0], mats["a"])


def test_augmenter_that_adds_examples_is_refused(augmenting_brain):
    brain, _ = augmenting_brain(Augmenter(concat_original=True, augmentations=[Warping(warp_window=2, dim=2)]))
    with pytest.raises(ValueError, match="feature_augment changed the feature shape"):
        brain._model_inputs(_batch(), sb.Stage.TRAIN)
