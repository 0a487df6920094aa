"""Fitting the training-free mean-mel vocoder from (manifest, units) pairs."""
from __future__ import annotations

import logging
from dataclasses import replace

from tqdm import tqdm

from most_speech.vocoder.data import aligned_pair, join_manifest_units
from most_speech.vocoder.mean_mel import MeanMelConfig, MeanMelVocoder

logger = logging.getLogger(__name__)


def fit_mean_mel_vocoder(
    manifest,
    units,
    out_dir=None,
    config: MeanMelConfig | None = None,
    num_units: int | None = None,
    data_root=None,
    max_utterances: int | None = None,
) -> MeanMelVocoder:
    """Estimate per-unit mean log-mel frames and run lengths, then save the vocoder.

    Parameters
    ----------
    manifest : str or Path
        Audio manifest (JSON Lines with ``id``, ``audio``, optional ``start``/``duration``).
    units : str or Path
        Unit file (JSON Lines ``{"id", "units", "km_tag"}``, or ``{"id", "units"}`` with a
        ``<name>.km_tag`` header as ``most-dump-units`` writes), joined to the manifest by id.
    out_dir : str or Path, optional
        Where to save the fitted vocoder (skipped when ``None``).
    config : MeanMelConfig, optional
        Analysis settings; its ``km_tag`` must match the unit file. By default
        :func:`most_speech.vocoder.default_cpu_vocoder_config` with the file's tag.
    num_units : int, optional
        Unit inventory size when ``config`` is not given (default: largest unit + 1).
    data_root : str, optional
        Replaces ``{data_root}`` in manifest audio paths.
    max_utterances : int, optional
        Use at most this many utterances.

    Returns
    -------
    MeanMelVocoder

    Examples
    --------
    >>> import json, tempfile, pathlib, numpy as np, soundfile as sf
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sf.write(d / "a.wav", np.random.randn(3200).astype("float32") * 0.1, 16000)
    >>> _ = (d / "m.jsonl").write_text(json.dumps({"id": "a", "audio": str(d / "a.wav")}) + "\\n")
    >>> _ = (d / "u.jsonl").write_text(json.dumps({"id": "a", "units": [0, 0, 1, 1, 2] * 2,
    ...     "km_tag": "k"}) + "\\n")
    >>> voc = fit_mean_mel_vocoder(d / "m.jsonl", d / "u.jsonl", d / "voc", num_units=4)
    >>> voc.km_tag, voc.num_units
    ('k', 4)
    """
    from most_speech.vocoder import default_cpu_vocoder_config

    utterances, km_tag = join_manifest_units(manifest, units, data_root)
    if max_utterances is not None:
        utterances = utterances[:max_utterances]
    if config is None:
        n = num_units or int(max(int(u.units.max()) for u in utterances)) + 1
        config = default_cpu_vocoder_config(km_tag, n)
    elif config.km_tag != km_tag:
        raise ValueError(
            f"{units}: units were made with km_tag {km_tag!r} but the vocoder config says "
            f"{config.km_tag!r}"
        )
    vocoder = MeanMelVocoder(replace(config))
    for utt in tqdm(utterances, desc="mean-mel stats", unit="utt"):
        frame_units, wav = aligned_pair(utt, config.sample_rate, config.hop_length)
        if int(frame_units.max()) >= config.num_units:
            raise ValueError(
                f"utterance {utt.id!r}: unit {int(frame_units.max())} >= num_units {config.num_units}"
            )
        vocoder.accumulate(frame_units, wav)
    vocoder.finalize()
    seen = int((vocoder.frame_counts > 0).sum())
    logger.info("mean-mel vocoder: %d utterances, %d/%d units seen", len(utterances), seen, config.num_units)
    if out_dir is not None:
        vocoder.save(out_dir)
    return vocoder
