"""End-to-end data path: manifest -> task templates -> task mixture -> token-budget batches -> padded tensors."""
import collections

import pytest
import torch

from most_speech.data.batching import batch_stream
from most_speech.data.collate import Collator
from most_speech.data.datasets import TaskDataset
from most_speech.data.manifest import read_manifest, write_manifest
from most_speech.data.mixing import TaskMixture
from most_speech.data.templates import IGNORE_INDEX, Example, TaskTemplates
from most_speech.text.tokenizer import MoSTTokenizer, train_sentencepiece

WORDS = "the cat sat on a mat while speech and text models learn to talk".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    sents = [" ".join(WORDS[k:k + 3 + k % 5]) for k in range(len(WORDS) - 3)]
    tok = MoSTTokenizer.from_sentencepiece(
        train_sentencepiece(sents * 5 + ["transcribe convert following into"] * 5, d / "sp", vocab_size=60),
        num_units=12)
    entries = [{"id": f"u{i}", "audio": f"{{data_root}}/u{i}.flac", "duration": 1.0 + i % 4, "text": s,
                "units": [(i + j) % 12 for j in range(5 + i % 7)], "num_frames": 10 + 3 * (i % 5)}
               for i, s in enumerate(sents)]
    manifest = read_manifest(write_manifest(entries, d / "train.jsonl")).entries()
    return tok, manifest


def test_mixture_to_batches(setup):
    tok, manifest = setup
    templates = TaskTemplates(tok)
    streams = {task: TaskDataset(manifest, templates, task) for task in ("asr", "tts", "text_lm")}
    mixture = TaskMixture(streams, {"asr": 0.4, "tts": 0.4, "text_lm": 0.2}, seed=0, block_size=10, num_draws=200)
    collate = Collator(tok.layout)
    tasks = collections.Counter()
    for batch_items in batch_stream(mixture, max_tokens=160, buffer_size=40):
        assert sum(1 for _ in batch_items) * max(ex.total_length for _, ex in batch_items) <= 160
        batch = collate(batch_items)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        assert ids.shape == labels.shape == mask.shape
        assert (labels[mask == 0] == IGNORE_INDEX).all()
        assert (ids[mask == 0] == tok.pad_id).all()
        for row, (task, spans) in enumerate(zip(batch["tasks"], batch["audio_spans"])):
            tasks[task] += 1
            if task == "asr":
                p = spans[0].position
                assert ids[row, p].item() == tok.layout.bow_id and ids[row, p + 1].item() == tok.layout.eow_id
            last = int(mask[row].sum()) - 1
            assert labels[row, last].item() == tok.eos_id
    assert tasks == {"asr": 80, "tts": 80, "text_lm": 40}


def test_task_dataset_in_dataloader(setup):
    tok, manifest = setup
    ds = TaskDataset(manifest, TaskTemplates(tok), "tts")
    assert isinstance(ds[0], Example) and len(ds.lengths()) == len(manifest)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=Collator(tok.layout))
    first = next(iter(loader))
    assert first["input_ids"].shape[0] == 4 and first["tasks"] == ["tts"] * 4
    with pytest.raises(ValueError, match="unknown task"):
        TaskDataset(manifest, TaskTemplates(tok), "ocr")


def test_batch_stream_rejects_oversize(setup):
    with pytest.raises(ValueError, match="'big'.*max_tokens=4"):
        list(batch_stream([Example("big", "text_lm", [1] * 5, [1] * 5)], max_tokens=4))
