"""Scoring and evaluation suites of most_speech.

Every score uses :func:`most_speech.text.normalize.normalize_text` (one English normaliser).

* :mod:`~most_speech.scoring.wer` - corpus WER/CER with jiwer, per-utterance S/D/I, files joined by id;
  :mod:`~most_speech.scoring.report` - ``result.txt`` alignments, ``.trn`` export, worst-utterance table
* :mod:`~most_speech.scoring.judges` / :mod:`~most_speech.scoring.intelligibility` - ASR judges (whisper,
  pocketsphinx, HF CTC, our own) and TTS intelligibility with the real-audio ceiling
* :mod:`~most_speech.scoring.slm` / :mod:`~most_speech.scoring.slm_data` - likelihood-pair accuracy
  (sWUGGY, sBLIMP, s/tStoryCloze) and local builders of such pair sets
* :mod:`~most_speech.scoring.qa` - spoken QA (WebQuestions), gold answer contained in the output
* :mod:`~most_speech.scoring.cli` - the ``most-score`` command

Only the light text scorers are imported here; judges and LM scoring import torch-based code on demand.
"""
from most_speech.text.normalize import normalize_text
from most_speech.scoring.wer import CorpusScore, UttScore, cer, score_files, score_texts, wer

__all__ = ["normalize_text", "score_texts", "score_files", "wer", "cer", "CorpusScore", "UttScore"]
