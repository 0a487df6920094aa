"""data package of most_speech: manifests, corpus preparers, task templates, mixing, batching, collation.

Modules (import what you need; nothing heavy is imported here):

- :mod:`most_speech.data.manifest`   JSON Lines manifests keyed by id, validation, filtering, units by id
- :mod:`most_speech.data.preparers`  LibriHeavy, LibriSpeech, Common Voice, SmolTalk, Kaldi data dirs
- :mod:`most_speech.data.templates`  ASR / TTS / text LM / speech and text instruction examples
- :mod:`most_speech.data.datasets`   a manifest seen through one task template
- :mod:`most_speech.data.mixing`     weighted, seeded, resumable task mixture
- :mod:`most_speech.data.batching`   token-budget batches, sequence packing
- :mod:`most_speech.data.collate`    padded tensors
- :mod:`most_speech.data.cli`        ``most-prepare-data``
"""
