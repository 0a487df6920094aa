"""ASR judges: pocketsphinx on real speech, a tiny random CTC model directory, callables, the factory."""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from most_speech.scoring.io import read_transcripts
from most_speech.scoring.judges import CallableJudge, CTCJudge, PocketSphinxJudge, make_judge
from most_speech.scoring.wer import score_texts

SHARED = Path(os.environ.get("MOST_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
LIBRIVOX = SHARED / "pocketsphinx_librivox"
needs_librivox = pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="shared/data/pocketsphinx_librivox absent")


def _librivox(ids=None):
    refs = read_transcripts(LIBRIVOX / "transcription")
    ids = ids or list(refs)
    return {k: refs[k] for k in ids}, [LIBRIVOX / f"{k}.wav" for k in ids]


@needs_librivox
def test_pocketsphinx_on_real_speech():
    # the two shortest clips (3.0 s + 3.3 s) keep this a few seconds
    refs, paths = _librivox(["sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930"])
    hyps = PocketSphinxJudge().transcribe(paths, progress=False)
    score = score_texts(refs, dict(zip(refs, hyps)))
    # README measures 26.8% on all 5 clips; a broken front-end (wrong rate, wrong sample format) gives ~100%
    assert 0.0 <= score.error_rate <= 0.5, hyps


@pytest.mark.slow
@needs_librivox
def test_pocketsphinx_all_librivox_clips():
    refs, paths = _librivox()
    hyps = PocketSphinxJudge().transcribe(paths, progress=False)
    assert 0.15 <= score_texts(refs, dict(zip(refs, hyps))).error_rate <= 0.40


def _tiny_ctc_dir(path: Path) -> Path:
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    vocab = {"<pad>": 0, "|": 1, "<unk>": 2, "a": 3, "b": 4, "c": 5}
    path.mkdir()
    (path / "vocab.json").write_text(__import__("json").dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(path / "vocab.json"), pad_token="<pad>", unk_token="<unk>",
                               word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(path)
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                         num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                         do_stable_layer_norm=True, pad_token_id=0, mask_time_prob=0.0)
    Wav2Vec2ForCTC(cfg).save_pretrained(path)
    return path


def test_ctc_judge_plumbing(tmp_path):
    model_dir = _tiny_ctc_dir(tmp_path / "ctc")
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (3200, 4800, 1600)]
    sf.write(tmp_path / "a.wav", wavs[0], 16000)
    judge = CTCJudge(str(model_dir), batch_size=2)
    batched = judge.transcribe([tmp_path / "a.wav", wavs[1], wavs[2]], progress=False)
    assert len(batched) == 3 and all(set(t.replace("<unk>", "")) <= set("abc ") for t in batched)
    # greedy decoding by hand on each utterance alone gives the same strings as the padded batch
    for wav, text in zip(wavs, batched):
        inputs = judge.processor(wav, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = judge.model(**inputs).logits.argmax(-1)[0].tolist()
        collapsed = [i for j, i in enumerate(ids) if (j == 0 or i != ids[j - 1]) and i != 0]
        expect = "".join({1: " ", 2: "<unk>", 3: "a", 4: "b", 5: "c"}[i] for i in collapsed)
        assert text == " ".join(expect.split())


def test_ctc_judge_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CTCJudge(str(tmp_path / "nowhere"))


def test_callable_judge_gets_16k_mono_arrays(tmp_path):
    stereo_44k = np.zeros((44100, 2), dtype=np.float32)
    sf.write(tmp_path / "s.flac", stereo_44k, 44100)
    seen = []
    judge = CallableJudge(lambda wavs: seen.extend(w.shape for w in wavs) or ["x"] * len(wavs), name="ours")
    assert judge.transcribe([tmp_path / "s.flac", (np.zeros(8000), 8000)], progress=False) == ["x", "x"]
    assert seen == [(16000,), (16000,)]


def test_judge_errors():
    bad = CallableJudge(lambda wavs: [], name="broken")
    with pytest.raises(RuntimeError, match="broken judge returned 0 transcripts for 1"):
        bad.transcribe([np.zeros(10)], progress=False)
    with pytest.raises(ValueError, match="unknown judge 'kaldi'"):
        make_judge("kaldi")
    with pytest.raises(ValueError, match="needs a model directory"):
        make_judge("ctc")
    with pytest.raises(ValueError, match="missing.wav"):
        make_judge(lambda w: ["a"]).transcribe(["missing.wav"], progress=False)
    assert make_judge(bad) is bad
