"""most-decode on a tiny export: asr / tts / slm-pairs / qa write the files the scoring stage reads."""
import json

import soundfile as sf

from most_speech.decoding.cli import main
from most_speech.scoring.slm import read_pairs

from test_inference import tiny_export, write_wav


def manifest(tmp_path, n=3):
    rows = []
    for i in range(n):
        write_wav(tmp_path / f"w{i}.wav", 0.6 + 0.2 * i, i)
        rows.append({"id": f"spk/utt{i}", "audio": f"{{data_root}}/w{i}.wav", "text": "the cat sat",
                     "start": 0.1, "duration": 0.4})
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_asr_and_qa(tmp_path):
    export = tiny_export(tmp_path)
    m = manifest(tmp_path)
    main(["asr", str(export), "--manifest", str(m), "--data-root", str(tmp_path), "--out",
          str(tmp_path / "asr/hyp.jsonl"), "--max-new-tokens", "3", "--batch-size", "2"])
    hyps = read(tmp_path / "asr/hyp.jsonl")
    assert [h["id"] for h in hyps] == ["spk/utt0", "spk/utt1", "spk/utt2"]
    main(["qa", str(export), "--manifest", str(m), "--data-root", str(tmp_path), "--out",
          str(tmp_path / "qa/answers.jsonl"), "--max-new-tokens", "2", "--limit", "2"])
    assert len(read(tmp_path / "qa/answers.jsonl")) == 2


def test_tts_writes_wavs_and_judge_manifest(tmp_path):
    export = tiny_export(tmp_path)
    m = manifest(tmp_path, 2)
    main(["tts", str(export), "--manifest", str(m), "--data-root", str(tmp_path), "--out-dir",
          str(tmp_path / "tts")])
    synth = read(tmp_path / "tts/synth.jsonl")
    units = read(tmp_path / "tts/units.jsonl")
    assert [s["id"] for s in synth] == [u["id"] for u in units] == ["spk/utt0", "spk/utt1"]
    for s, u in zip(synth, units):
        data, sr = sf.read(s["audio"])
        assert sr == 16000 and (len(data) > 0) == bool(u["units"])
        assert u["km_tag"] == "mfcc-km16-test" and s["text"] == "the cat sat"


def test_slm_pairs_become_unit_token_pairs(tmp_path):
    export = tiny_export(tmp_path, "units")
    write_wav(tmp_path / "g.wav", 0.5, 1)
    write_wav(tmp_path / "b.wav", 0.7, 2)
    (tmp_path / "pairs.csv").write_text("id,type,group,good_path,bad_path\np1,lexical,,g.wav,b.wav\n")
    main(["slm-pairs", str(export), "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "p.jsonl")])
    pair = read_pairs(tmp_path / "p.jsonl")[0]
    from most_speech.text.tokenizer import MoSTTokenizer
    lay = MoSTTokenizer.from_pretrained(export / "tokenizer").layout
    for seq in (pair.good, pair.bad):
        assert seq[0] == lay.boa_id and seq[-1] == lay.eoa_id
        assert all(lay.is_unit(t) for t in seq[1:-1]) and len(seq) > 2
