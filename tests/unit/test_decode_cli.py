"""most-decode on a tiny export: asr / tts / slm-pairs / qa write the files the scoring stage reads."""
import json

import pytest
import soundfile as sf

from most_speech.decoding.cli import main
from most_speech.scoring import cli as score_cli
from most_speech.scoring import intelligibility
from most_speech.scoring.judges import CallableJudge
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


def frame_rate_targets(export):
    """Mark a tiny export as trained on frame-rate (not deduplicated) TTS / speech-LM targets."""
    info = json.loads((export / "most.json").read_text())
    info["template"] = {"dedup_target_units": False}
    (export / "most.json").write_text(json.dumps(info))


def test_asr_and_qa(tmp_path):
    export = tiny_export(tmp_path)
    m = manifest(tmp_path)
    main(["asr", str(export), "--manifest", str(m), "--data-root", str(tmp_path), "--out",
          str(tmp_path / "asr/hyp.jsonl"), "--max-new-tokens", "3", "--batch-size", "2"])
    hyps = read(tmp_path / "asr/hyp.jsonl")
    assert [h["id"] for h in hyps] == ["spk/utt0", "spk/utt1", "spk/utt2"]
    assert json.loads((tmp_path / "asr/decoding.json").read_text()) == {"beam_size": 1, "ctc_weight": 0.0}
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
        # the real recording's segment (start 0.1, duration 0.4) cut to a 16 kHz clip for the judge
        real, real_sr = sf.read(s["real_audio"])
        assert "ref_audio" not in s and real_sr == 16000 and len(real) == 6400
        assert s["real_audio"] == str(tmp_path / "tts" / "real" / f"{s['id'].replace('/', '_')}.wav")


def test_tts_best_of_n_ranks_with_the_models_own_asr(tmp_path):
    export = tiny_export(tmp_path)
    m = manifest(tmp_path, 2)
    main(["tts", str(export), "--manifest", str(m), "--data-root", str(tmp_path), "--out-dir",
          str(tmp_path / "tts"), "--temperature", "1.0", "--candidates", "3"])
    units = read(tmp_path / "tts/units.jsonl")
    assert [u["id"] for u in units] == ["spk/utt0", "spk/utt1"]
    assert all(isinstance(u["rerank_score"], float) and u["rerank_score"] < 0 for u in units if u["units"])
    settings = json.loads((tmp_path / "tts/decoding.json").read_text())
    assert settings["candidates"] == 3 and settings["reranker"] == "self" and settings["rerank_ctc_weight"] == 0.0
    with pytest.raises(SystemExit, match="CTC head"):
        main(["tts", str(export), "--manifest", str(m), "--data-root", str(tmp_path), "--out-dir",
              str(tmp_path / "tts2"), "--candidates", "2", "--rerank-ctc-weight", "0.5"])


def test_tts_best_of_n_ranks_with_the_speech_encoders_ctc_head(tmp_path):
    export = tiny_export(tmp_path, phonetic=True)
    m = manifest(tmp_path, 2)
    main(["tts", str(export), "--manifest", str(m), "--data-root", str(tmp_path), "--out-dir",
          str(tmp_path / "tts"), "--temperature", "1.0", "--candidates", "3", "--reranker", "encoder_ctc"])
    units = read(tmp_path / "tts/units.jsonl")
    # null: the tiny model's units gave the encoder fewer frames than "the cat sat" has letters (score -inf)
    assert all(u["rerank_score"] is None or u["rerank_score"] < 0 for u in units) and all(u["units"] for u in units)
    settings = json.loads((tmp_path / "tts/decoding.json").read_text())
    assert settings["reranker"] == "encoder_ctc" and settings["rerank_ctc_weight"] is None
    with pytest.raises(SystemExit, match="no CTC head"):
        main(["tts", str(tiny_export(tmp_path / "fbank")), "--manifest", str(m), "--data-root", str(tmp_path),
              "--out-dir", str(tmp_path / "tts2"), "--candidates", "2", "--reranker", "encoder_ctc"])


def test_tts_synth_manifest_is_scored_with_its_real_audio(tmp_path, monkeypatch):
    export = tiny_export(tmp_path)
    main(["tts", str(export), "--manifest", str(manifest(tmp_path, 2)), "--data-root", str(tmp_path),
          "--out-dir", str(tmp_path / "tts")])
    # toy judge: hears the sentence in the 0.4 s real clips only
    judge = CallableJudge(lambda wavs: ["the cat sat" if len(w) == 6400 else "" for w in wavs], name="toy")
    monkeypatch.setattr(intelligibility, "make_judge", lambda spec: judge)
    assert score_cli.main(["intelligibility", "--manifest", str(tmp_path / "tts/synth.jsonl"), "--judge", "toy",
                           "--out", str(tmp_path / "score")]) == 0
    rows = {r["audio"]: r for r in json.loads((tmp_path / "score/summary.json").read_text())}
    assert rows["real (ceiling)"]["n_utts"] == 2 and rows["real (ceiling)"]["wer"] == 0.0
    assert rows["synthesized"]["n_utts"] == 2


def test_resynth_voices_each_utterances_own_units_deduplicated(tmp_path):
    export = tiny_export(tmp_path)
    m = manifest(tmp_path, 2)
    units = tmp_path / "units.jsonl"
    units.write_text('{"id": "spk/utt0", "units": [3, 3, 3, 5]}\n{"id": "spk/utt1", "units": [1]}\n'
                     '{"id": "other", "units": [2]}\n')
    (tmp_path / "units.km_tag").write_text("mfcc-km16-test\n")
    main(["resynth", str(export), "--manifest", str(m), "--units", str(units), "--out-dir", str(tmp_path / "rs")])
    synth = read(tmp_path / "rs/synth.jsonl")
    assert [s["id"] for s in synth] == ["spk/utt0", "spk/utt1"] and synth[0]["text"] == "the cat sat"
    from most_speech.vocoder import load_vocoder
    voc = load_vocoder(export / "vocoder")
    want = voc.synthesize([[3, 5]], km_tag="mfcc-km16-test", deduplicated=True)[0].numpy()
    got, sr = sf.read(synth[0]["audio"], dtype="float32")
    assert sr == voc.sample_rate and len(got) == len(want)
    (tmp_path / "units.km_tag").write_text("fbank-km16-other\n")
    with pytest.raises(ValueError, match="km"):
        main(["resynth", str(export), "--manifest", str(m), "--units", str(units), "--out-dir", str(tmp_path / "x")])
    units.write_text('{"id": "spk/utt0", "units": [3]}\n')
    (tmp_path / "units.km_tag").write_text("mfcc-km16-test\n")
    with pytest.raises(SystemExit, match="spk/utt1"):
        main(["resynth", str(export), "--manifest", str(m), "--units", str(units), "--out-dir", str(tmp_path / "y")])


def test_frame_rate_tts_targets_are_voiced_without_the_duration_predictor(tmp_path):
    # a model trained with dedup_target_units=False chose its units' durations: resynthesis, TTS and the
    # spoken-LM pairs use the frame-rate units as they are
    from most_speech.inference.export import ExportInfo
    from most_speech.vocoder import load_vocoder

    export = tiny_export(tmp_path)
    frame_rate_targets(export)
    assert ExportInfo.load(export).template == {"dedup_target_units": False}
    m = manifest(tmp_path, 1)
    units = tmp_path / "units.jsonl"
    units.write_text('{"id": "spk/utt0", "units": [3, 3, 3, 5]}\n')
    (tmp_path / "units.km_tag").write_text("mfcc-km16-test\n")
    main(["resynth", str(export), "--manifest", str(m), "--units", str(units), "--out-dir", str(tmp_path / "rs")])
    voc = load_vocoder(export / "vocoder")
    want = voc.synthesize([[3, 3, 3, 5]], km_tag="mfcc-km16-test", deduplicated=False)[0].numpy()
    got, _ = sf.read(read(tmp_path / "rs/synth.jsonl")[0]["audio"], dtype="float32")
    assert len(got) == len(want) == 4 * voc.hop_length
    main(["tts", str(export), "--manifest", str(m), "--out-dir", str(tmp_path / "tts"), "--temperature", "1.0"])
    generated = read(tmp_path / "tts/units.jsonl")[0]["units"]
    got, _ = sf.read(read(tmp_path / "tts/synth.jsonl")[0]["audio"], dtype="float32")
    assert len(got) == len(generated) * voc.hop_length  # one vocoder frame per generated unit, repeats kept


def test_tts_without_data_root_writes_no_real_audio(tmp_path, caplog):
    export = tiny_export(tmp_path)
    main(["tts", str(export), "--manifest", str(manifest(tmp_path, 1)), "--out-dir", str(tmp_path / "tts")])
    assert "real_audio" not in read(tmp_path / "tts/synth.jsonl")[0]
    assert "no --data-root was given" in caplog.text


def test_qa_reads_build_qa_output_from_any_cwd(tmp_path, monkeypatch):
    export = tiny_export(tmp_path)
    (tmp_path / "q.json").write_text(json.dumps([
        {"qId": "q1", "qText": "what is the capital of france?", "answers": ["Paris"]},
        {"qId": "q2", "qText": "who wrote hamlet?", "answers": ["Shakespeare"]}]))
    assert score_cli.main(["build-qa", "--questions", str(tmp_path / "q.json"), "--out",
                           str(tmp_path / "sq")]) == 0
    assert read(tmp_path / "sq/questions.jsonl")[0]["audio"] == "wav/q1.wav"  # relative to its folder
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    main(["qa", str(export), "--manifest", "../sq/questions.jsonl", "--out", "answers.jsonl",
          "--max-new-tokens", "2"])
    assert [a["id"] for a in read(tmp_path / "elsewhere/answers.jsonl")] == ["q1", "q2"]


def test_data_root_placeholder_without_data_root_names_the_utterance(tmp_path):
    export = tiny_export(tmp_path)
    with pytest.raises(SystemExit, match=r"test\.jsonl: utterance 'spk/utt0': audio '\{data_root\}/w0\.wav' "
                                         r"uses \{data_root\}; pass --data-root"):
        main(["asr", str(export), "--manifest", str(manifest(tmp_path, 1)), "--out", str(tmp_path / "h.jsonl")])


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
        assert all(a != b for a, b in zip(seq[1:-2], seq[2:-1]))  # deduplicated, as the TTS targets were
    # a model trained on frame-rate units scores frame-rate units: 25 ms MFCC frames (0.5 s: 50 of them)
    frame_rate_targets(export)
    main(["slm-pairs", str(export), "--pairs", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "p2.jsonl")])
    frames = read_pairs(tmp_path / "p2.jsonl")[0]
    assert len(frames.good) - 2 >= len(pair.good) - 2 and len(frames.bad) > len(frames.good)
