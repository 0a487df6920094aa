"""Audio front-end of most_speech.

Modules (imported on demand; nothing heavy is loaded by ``import most_speech.audio``):

* ``io``         -- ``load_audio`` / ``save_audio`` (soundfile, ffmpeg fallback, torchaudio resampling), ``AudioError``
* ``hubert``     -- frozen ``HubertEncoder`` on transformers' HubertModel; HuBERT-base / mHuBERT-25Hz configs
* ``frontends``  -- Kaldi fbank / MFCC with the same interface; ``build_encoder(kind, **kw)``
* ``phonetic``   -- ``PhoneticEncoder``: a small CTC-trained fbank encoder with the same interface (HuBERT's
  stand-in where no weights can be downloaded); ``phonetic_fit`` trains it (``most-train-phonetic-encoder``)
* ``kmeans``     -- ``learn_kmeans``, ``KMeansQuantizer`` (apply, km_tag, safetensors, safe foreign import),
  ``dedup`` / ``expand``, ``check_km_tag``
* ``store``      -- id-keyed, sharded, atomic feature (kaldiio ark/scp) and unit (JSONL + km_tag) stores
* ``safe_load``  -- restricted loading of foreign pickled checkpoints
* ``cli``        -- ``most-dump-features``, ``most-learn-kmeans``, ``most-dump-units``
"""
