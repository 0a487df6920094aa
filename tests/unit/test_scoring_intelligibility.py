"""TTS intelligibility on hand-made cases with a toy judge (real judges: test_judges / test_whisper_judge)."""
import json

import numpy as np
import pytest
import soundfile as sf

from most_speech.scoring.cli import main
from most_speech.scoring.intelligibility import (IntelligibilityItem, evaluate_intelligibility, format_table,
                                                 load_items, write_intelligibility_report)
from most_speech.scoring.judges import CallableJudge


def _toy_judge():
    # "hears" the first N words of a fixed sentence, N = number of 0.1 s blocks of the input
    words = "the quick brown fox jumps".split()
    return CallableJudge(lambda wavs: [" ".join(words[: len(w) // 1600]) for w in wavs], name="toy")


def test_synth_and_real_ceiling_table():
    text = "the quick brown fox jumps"
    items = [
        IntelligibilityItem("u1", text, np.zeros(3 * 1600), real_audio=np.zeros(5 * 1600)),  # 2 del / 0
        IntelligibilityItem("u2", "The quick!", np.zeros(2 * 1600)),                         # no real audio
    ]
    res = evaluate_intelligibility(items, _toy_judge(), progress=False)
    rows = {r["audio"]: r for r in res.rows()}
    # synthesized: u1 2 deletions of 5 words, u2 correct -> 2 / 7
    assert rows["synthesized"]["wer"] == pytest.approx(round(100 * 2 / 7, 2))
    assert rows["synthesized"]["n_utts"] == 2
    # ceiling on u1 only: real audio 0 errors; synthesized on the same subset 2 / 5
    assert rows["real (ceiling)"]["wer"] == 0.0 and rows["real (ceiling)"]["n_utts"] == 1
    assert rows["synthesized (ceiling subset)"]["wer"] == 40.0
    # CER of u1 synthesized: "the quick brown fox jumps" (25 chars) vs "the quick brown" -> 10 deletions
    assert rows["synthesized (ceiling subset)"]["cer"] == 40.0
    table = format_table([res])
    assert "| toy | real (ceiling) | 1 | 0.00 | 0.00 |" in table


def test_duplicate_ids_rejected():
    items = [IntelligibilityItem("u", "a", np.zeros(10)), IntelligibilityItem("u", "b", np.zeros(10))]
    with pytest.raises(ValueError, match="duplicate"):
        evaluate_intelligibility(items, _toy_judge(), progress=False)


def test_manifest_paths_and_errors(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"id": "a", "text": "x", "audio": "syn/a.wav", "real_audio": "{data_root}/a.flac"}\n')
    item = load_items(tmp_path / "m.jsonl", data_root="/corpus")[0]
    assert item.audio == str(tmp_path / "syn" / "a.wav") and item.real_audio == "/corpus/a.flac"
    with pytest.raises(ValueError, match="no data_root"):
        load_items(tmp_path / "m.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "audio": "a.wav"}\n')
    with pytest.raises(ValueError, match=r"id 'a'.*\['text'\]"):
        load_items(tmp_path / "bad.jsonl")


def test_relative_data_root_is_taken_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "m.jsonl").write_text('{"id": "a", "text": "x", "audio": "a.wav", '
                                              '"real_audio": "{data_root}/a.flac"}\n')
    monkeypatch.chdir(tmp_path)
    item = load_items("exp/m.jsonl", data_root="corpus")[0]
    assert item.real_audio == str(tmp_path / "corpus" / "a.flac") and item.audio == "exp/a.wav"


def test_old_ref_audio_field_is_not_scored(tmp_path, caplog):
    # synth.jsonl of earlier most-decode tts: "ref_audio" may be a whole recording, not the sentence's segment
    (tmp_path / "m.jsonl").write_text('{"id": "a", "text": "x", "audio": "a.wav", "ref_audio": "/c/long.flac"}\n')
    assert load_items(tmp_path / "m.jsonl")[0].real_audio is None
    assert "have 'ref_audio' but no 'real_audio'" in caplog.text and "m.jsonl" in caplog.text


def test_report_files(tmp_path):
    items = [IntelligibilityItem("u1", "the quick", np.zeros(1600), real_audio=np.zeros(3200))]
    out = write_intelligibility_report([evaluate_intelligibility(items, _toy_judge(), progress=False)], tmp_path)
    assert json.loads((out / "summary.json").read_text())[0]["wer"] == 50.0
    assert (out / "toy" / "synth" / "result.txt").is_file() and (out / "toy" / "real" / "worst.md").is_file()


def test_cli_intelligibility_with_pocketsphinx(tmp_path, capsys):
    sf.write(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    (tmp_path / "m.jsonl").write_text('{"id": "a", "text": "hello", "audio": "a.wav"}\n')
    assert main(["intelligibility", "--manifest", str(tmp_path / "m.jsonl"), "--judge", "pocketsphinx",
                 "--out", str(tmp_path / "o")]) == 0
    assert "| pocketsphinx | synthesized | 1 |" in capsys.readouterr().out
    assert (tmp_path / "o" / "table.md").is_file()


def test_judging_in_processes_gives_the_transcripts_of_one_judge(tmp_path, capsys):
    from most_speech.scoring.judges import make_judge, transcribe_in_processes
    from most_speech.scoring.synth import synthesize_many

    texts = ["the cat sat", "open the window", "good morning", "a red house", "sit down please"]
    paths = synthesize_many(texts, [tmp_path / f"{i}.wav" for i in range(len(texts))], progress=False)
    one = make_judge("pocketsphinx").transcribe(paths, progress=False)
    assert transcribe_in_processes("pocketsphinx", paths, jobs=2, chunk_size=1, progress=False) == one
    with pytest.raises(TypeError, match="spec string"):
        evaluate_intelligibility([IntelligibilityItem("u", "a", np.zeros(10))], _toy_judge(), jobs=2)
    # the CLI: synthesized + real clips shared by 2 workers, the same table as one process
    lines = [json.dumps({"id": f"u{i}", "text": t, "audio": str(p), "real_audio": str(paths[-1 - i])})
             for i, (t, p) in enumerate(zip(texts, paths))]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    tables = []
    for jobs in ("1", "2"):
        assert main(["intelligibility", "--manifest", str(tmp_path / "m.jsonl"), "--judge", "pocketsphinx",
                     "--jobs", jobs, "--out", str(tmp_path / f"o{jobs}")]) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1] and "| pocketsphinx | real (ceiling) | 5 |" in tables[0]
