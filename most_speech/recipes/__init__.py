"""Python helpers shared by the recipes (``recipes/*/run.sh``): the steps no other CLI covers.

* :mod:`most_speech.recipes.tasks`  tokenizer + token layout + task manifests (``asr``, ``tts``, ``text_lm``,
  and their validation twins) from prepared manifests, units and features  (``python -m ...tasks``)
* :mod:`most_speech.recipes.mini`   text of the mini corpus's grammar: text-LM sentences of the training
  split, the word list for the spoken-LM pair test  (``python -m ...mini``)
* :mod:`most_speech.recipes.report` ``RESULTS.md`` (tables + training-curve plot) from an experiment's
  score files  (``python -m ...report``)
"""
