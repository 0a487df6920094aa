"""Corpus preparers: one module per corpus, each turning the corpus's own layout into JSON Lines manifests.

Every preparer prefixes ids with its corpus (``lh-``, ``ls-``, ``cv-<lang>-``, ``smoltalk-``) so that
manifests of several corpora can be mixed, and writes audio paths under the ``{data_root}`` placeholder.
"""
from most_speech.data.preparers.commonvoice import prepare_commonvoice
from most_speech.data.preparers.kaldi import read_kaldi_dir, write_kaldi_dir
from most_speech.data.preparers.libriheavy import prepare_libriheavy
from most_speech.data.preparers.librispeech import prepare_librispeech
from most_speech.data.preparers.smoltalk import prepare_smoltalk

__all__ = ["prepare_commonvoice", "prepare_libriheavy", "prepare_librispeech", "prepare_smoltalk",
           "read_kaldi_dir", "write_kaldi_dir"]
