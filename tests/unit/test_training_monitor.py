"""Training monitor (expert balance, TensorBoard) and continuous-feature batching."""
import numpy as np
import pytest
import torch

from most_speech.data.templates import AudioSpan
from most_speech.training.features import StoreFeatures, batch_audio_features
from most_speech.training.monitor import TrainingMonitor, expert_balance


def test_expert_balance_per_modality():
    counts = torch.tensor([[6.0, 2.0, 0.0, 0.0], [0.0, 1.0, 3.0, 3.0]])
    stats = expert_balance(counts, {0: [0, 1], 1: [2, 3]})
    assert stats["text/max_over_mean"] == pytest.approx(1.5)
    assert stats["text/outside_group"] == 0.0
    assert stats["audio/max_over_mean"] == pytest.approx(1.0)
    assert stats["audio/outside_group"] == pytest.approx(1 / 7)


def test_monitor_writes_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mon = TrainingMonitor(str(tmp_path), {0: [0, 1], 1: [2, 3]}, log_interval=2)
    counts = [torch.tensor([[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]])]
    mon.record_batch("asr", 2.0, 1.9, 0.1, tokens=100, routing_counts=counts)
    mon.record_batch("tts", 4.0, 3.9, 0.1, tokens=100, routing_counts=counts)
    stats = mon.flush(step=2, lr=0.5)
    mon.close()
    assert stats["loss/asr"] == 2.0 and stats["loss/tts"] == 4.0 and stats["tokens_per_s"] > 0
    assert stats["balance/audio/max_over_mean"] == pytest.approx(2.0)
    tags = EventAccumulator(str(tmp_path / "tb")).Reload().Tags()["scalars"]
    assert {"train/loss/asr", "train/lr", "train/aux_loss", "train/balance/text/max_over_mean"} <= set(tags)
    assert dict(mon.task_steps) == {"asr": 1, "tts": 1}


def test_monitor_labels_validation_lines_of_train_log_as_valid(tmp_path):
    from speechbrain.utils.train_logger import FileTrainLogger

    mon = TrainingMonitor(str(tmp_path), {0: [0, 1]}, log_interval=1, use_tensorboard=False,
                          train_logger=FileTrainLogger(str(tmp_path / "train_log.txt")))
    mon.record_batch("tts", 4.0, 3.9, 0.1, tokens=100)
    mon.flush(step=1, lr=0.5)
    mon.write({"loss/tts": 3.5}, step=1, prefix="valid")
    lines = (tmp_path / "train_log.txt").read_text().splitlines()
    assert "stage: train - train loss/tts: 4" in lines[0]
    assert lines[1].startswith("step: 1, stage: valid - valid loss/tts: 3.5") and "train" not in lines[1]


def test_batch_audio_features_from_a_store(tmp_path):
    from most_speech.audio.store import FeatureWriter

    with FeatureWriter(tmp_path / "feats.0-of-1") as w:
        w.write("u1", np.ones((3, 4), dtype=np.float32))
        w.write("u2", np.full((5, 4), 2.0, dtype=np.float32))
    out = batch_audio_features([[AudioSpan(2, "u2")], [AudioSpan(2, "u1")]], StoreFeatures(tmp_path))
    assert out["audio_features"].shape == (2, 5, 4) and out["audio_feature_lengths"].tolist() == [5, 3]
    assert float(out["audio_features"][1, 3:].abs().sum()) == 0.0
    assert batch_audio_features([[], []], None) is None
    with pytest.raises(ValueError, match="'u1'.*no feature source"):
        batch_audio_features([[AudioSpan(2, "u1")]], None)
