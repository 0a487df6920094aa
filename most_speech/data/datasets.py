"""Map-style datasets that turn manifest entries into task examples on access.

A :class:`TaskDataset` is what :class:`~most_speech.data.mixing.TaskMixture` mixes: one per task stream,
each applying its task template lazily (so a large manifest is tokenised only as it is drawn).
"""
from __future__ import annotations

from typing import List, Sequence

import torch

from most_speech.data.templates import Example, TaskTemplates


class TaskDataset(torch.utils.data.Dataset):
    """Entries of one manifest seen through one task template.

    Parameters
    ----------
    entries : sequence of dict
        Manifest entries (e.g. ``read_manifest(path).entries()``).
    templates : TaskTemplates
    task : str
        One of ``templates.tasks``.

    Examples
    --------
    >>> # ds = TaskDataset(read_manifest("data/train.jsonl").entries(), TaskTemplates(tok), "asr"); ds[0]
    """

    def __init__(self, entries: Sequence[dict], templates: TaskTemplates, task: str):
        if task not in templates.tasks:
            raise ValueError(f"unknown task {task!r}; known: {templates.tasks}")
        self.entries: List[dict] = list(entries)
        self.templates = templates
        self.task = task

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Example:
        return self.templates.build(self.task, self.entries[index])

    def lengths(self) -> List[int]:
        """``total_length`` of every example (tokenises everything once; for the batch sampler)."""
        return [self[i].total_length for i in range(len(self))]
