"""``RESULTS.md`` for the recipes: score tables and a training-curve plot from an experiment folder.

``python -m most_speech.recipes.report results --exp exp/mini --results RESULTS.md --section mini``
    Reads the experiment's files by the recipes' naming convention and (re)writes the section ``mini`` of
    ``RESULTS.md`` (other sections are kept, so the mini run and the ablation each own theirs):

    * ``<exp>/train/tb``                          TensorBoard scalars -> ``<exp>/curves.png`` (copied next to
      RESULTS.md as ``<section>_curves.png``) and the last train / valid losses;
    * ``<exp>/score/asr_<set>/summary.json``      ``most-score wer`` (ASR WER per test set);
    * ``<exp>/score/tts_<set>/summary.json``      ``most-score intelligibility`` (judge WER on synthesized and
      on the corpus's own audio);
    * ``<exp>/score/slm_<name>/summary.json``     ``most-score slm`` (pair accuracy with its 95 % CI);
    * ``<exp>/run_info.json``                     optional free-form facts (corpus size, hardware...);
    * ``<exp>/timings.tsv``                       ``stage<TAB>seconds<TAB>title`` lines written by run.sh.

``python -m most_speech.recipes.report ablation --run dense=exp/ablation/dense/seed1986 ... --results RESULTS.md``
    One row per run name: parameters (total / activated per token), final losses, ASR WER, TTS judge WER,
    pair accuracy; a name given several folders (one per seed) gets means ± standard deviations, and a second
    table gives each seed's ASR WER and pair accuracy (seeds read from ``<run>/train/hyperparams.yaml``).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from most_speech.data.fileio import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["read_scalars", "plot_curves", "results_section", "ablation_section", "update_section",
           "parameter_counts", "main"]

Curves = Dict[str, List[Tuple[int, float]]]


def read_scalars(tb_dir) -> Curves:
    """All scalar series of a TensorBoard folder: ``{tag: [(step, value), ...]}`` (empty when none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not Path(tb_dir).is_dir():
        return {}
    # The directory watcher logs "No path found after <last event file>" at INFO for every folder it reads,
    # which lands in the recipes' logs once per run reported; only its warnings are worth keeping there.
    tb_log = logging.getLogger("tensorboard")
    level = tb_log.level
    tb_log.setLevel(max(level, logging.WARNING))
    try:
        acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
    finally:
        tb_log.setLevel(level)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def plot_curves(curves: Curves, out_png, title: str = "training curves") -> Optional[Path]:
    """Plot train/valid loss per task (left) and the learning rate (right) into ``out_png``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> png = pathlib.Path(tempfile.mkdtemp()) / "c.png"
    >>> plot_curves({"train/loss/asr": [(1, 3.0), (2, 2.0)], "train/lr": [(1, 1e-3), (2, 1e-3)]}, png).is_file()
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = sorted(t for t in curves if re.fullmatch(r"(train|valid)/loss/\w+", t))
    if not losses:
        return None
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    for tag in losses:
        steps, values = zip(*curves[tag])
        ax.plot(steps, values, "-" if tag.startswith("train") else "o--", label=tag, markersize=3)
    ax.set(xlabel="optimizer step", ylabel="cross-entropy (nats/token)", title=title, yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if "train/lr" in curves:
        steps, values = zip(*curves["train/lr"])
        ax_lr.plot(steps, values)
    ax_lr.set(xlabel="optimizer step", title="learning rate")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".tmp-{out_png.name}")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    tmp.replace(out_png)
    return out_png


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _last(curves: Curves, tag: str) -> str:
    return f"{curves[tag][-1][1]:.3f}" if curves.get(tag) else "-"


def _timings(path: Path) -> List[Tuple[str, str, str]]:
    """Longest timing of each stage in run.sh's ``timings.tsv`` (a rerun that skipped finished work is not
    the stage's cost), in stage order."""
    if not path.is_file():
        return []
    best = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            n = int(parts[0])
            if n not in best or int(parts[1]) > int(best[n][1]):
                best[n] = (parts[0], parts[1], parts[2])
    return [best[k] for k in sorted(best)]


RESYNTH_SUFFIX = "_resynth"


def decoding_label(settings: Optional[dict]) -> str:
    """How ASR hypotheses were decoded, from ``most-decode asr``'s ``decoding.json``.

    Examples
    --------
    >>> decoding_label({"beam_size": 4, "ctc_weight": 0.5}), decoding_label({"beam_size": 1, "ctc_weight": 0})
    ('beam 4 + CTC 0.5', 'greedy')
    """
    if not settings:
        return "-"
    beam, ctc = int(settings.get("beam_size", 1)), float(settings.get("ctc_weight", 0.0))
    if ctc >= 1.0:
        return "CTC greedy"
    label = "greedy" if beam == 1 else f"beam {beam}"
    return f"{label} + CTC {ctc:g}" if ctc > 0 else label


def _asr_rows(score_dir: Path) -> List[str]:
    rows = []
    for summary in sorted(score_dir.glob("asr_*/summary.json")):
        s, name = _load(summary), summary.parent.name[4:]
        how = decoding_label(_load(score_dir.parent / "decode" / f"asr_{name}" / "decoding.json"))
        rows.append(f"| {name} | {how} | {s['n_utts']} | **{s['error_rate']:.2f}** | "
                    f"{s['sub']} / {s['del']} / {s['ins']} | {s['sentence_error_rate']:.2f} |")
    return rows


def _tts_rows(score_dir: Path) -> List[str]:
    rows = []
    for summary in sorted(score_dir.glob("tts_*/summary.json")):
        name = summary.parent.name[4:]
        resynth = name.endswith(RESYNTH_SUFFIX)  # most-decode resynth: the test set's own units, vocoded
        for r in _load(summary):
            audio = "resynthesized from real units (vocoder ceiling)" if resynth else r["audio"]
            rows.append(f"| {name[:-len(RESYNTH_SUFFIX)] if resynth else name} | {r['judge']} | {audio} | "
                        f"{r['n_utts']} | **{r['wer']:.2f}** | {r['cer']:.2f} |")
    return rows


def _slm_rows(score_dir: Path) -> List[str]:
    rows = []
    for summary in sorted(score_dir.glob("slm_*/summary.json")):
        s = _load(summary)
        base, vs = s.get("length_baseline"), s.get("vs_length_baseline")  # absent from older summaries
        base = "-" if base is None else f"{base:.2f}"
        vs = "-" if vs is None else f"{vs['model_only']} / {vs['baseline_only']} (p = {vs['p']:.2g})"
        eq = s.get("equal_length") or {}
        eq = "-" if not eq.get("n_pairs") else \
            f"{eq['accuracy']:.2f} [{eq['ci95'][0]:.1f}-{eq['ci95'][1]:.1f}] of {eq['n_pairs']}"
        voices = " · ".join(f"{v.split(':')[-1]} {r['accuracy']:.1f}" for v, r in (s.get("per_voice") or {}).items())
        rows.append(f"| {summary.parent.name[4:]} | {s['n_pairs']} | **{s['accuracy']:.2f}** | "
                    f"{s['ci95'][0]:.2f} - {s['ci95'][1]:.2f} | {voices or '-'} | {base} | {vs} | {eq} | 50.00 |")
    return rows


def results_section(exp_dir, image_name: Optional[str] = None, title: str = "Results") -> str:
    """Markdown of one experiment: ASR WER, TTS intelligibility, spoken-LM pairs, losses, the curve plot."""
    exp, score = Path(exp_dir), Path(exp_dir) / "score"
    curves = read_scalars(exp / "train" / "tb")
    out = [f"## {title}", ""]
    info = _load(exp / "run_info.json") or {}
    if info:
        out += ["| fact | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in info.items()] + [""]
    tables = [
        ("ASR, WER %", "| test set | decoding | utts | WER % | sub / del / ins | SER % |",
         "|---|---|---:|---:|---|---:|", _asr_rows(score)),
        ("TTS intelligibility: the judge's WER on the synthesized speech, and on the corpus's own recordings "
         "of the same sentences (the judge's floor)", "| test set | judge | audio | utts | WER % | CER % |",
         "|---|---|---|---:|---:|---:|", _tts_rows(score)),
        ("Spoken-LM likelihood pairs (accuracy %, 95 % Wilson CI, pooled over the held-out voices that speak "
         "every pair; per voice: each voice alone; chance is 50 %; the length baseline picks "
         "the item with fewer units, which a summed log-probability also favours; model-only / baseline-only: "
         "pairs only the model or only the baseline gets right, with the sign test's p; equal length: the "
         "accuracy over the pairs whose two items have the same number of units, where length cannot decide)",
         "| pair set | pairs | accuracy % | 95 % CI | per voice % | length baseline % | model-only / baseline-only "
         "| equal length % [CI] of pairs | chance |",
         "|---|---:|---:|---|---|---:|---|---|---:|", _slm_rows(score)),
    ]
    for caption, head, rule, rows in tables:
        if rows:
            out += [f"**{caption}**", "", head, rule, *rows, ""]
    timings = _timings(exp / "timings.tsv")
    if timings:
        out += ["**Wall time per stage** (longest run of each stage)", "",
                "| stage | what | seconds |", "|---:|---|---:|"]
        out += [f"| {n} | {title} | {sec} |" for n, sec, title in timings]
        out += [f"| | total | {sum(int(sec) for _, sec, _ in timings)} |", ""]
    loss_tags = sorted(t for t in curves if re.fullmatch(r"(train|valid)/loss/\w+", t))
    if loss_tags:
        out += ["**Final losses** (nats/token)", "", "| series | last value | at step |", "|---|---:|---:|"]
        out += [f"| {t} | {_last(curves, t)} | {curves[t][-1][0]} |" for t in loss_tags] + [""]
    if image_name:
        out += [f"![training curves]({image_name})", ""]
    return "\n".join(out)


def parameter_counts(model_dir) -> Dict[str, int]:
    """Total parameters and parameters active for one token (routed experts counted ``k`` of ``E``).

    Embedding and output matrices are counted in both (they are used by every token).
    """
    from safetensors import safe_open

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    total = routed = 0
    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        for name in f.keys():
            n = 1
            for d in f.get_slice(name).get_shape():
                n *= d
            total += n
            if ".mlp.experts." in name:
                routed += n
    E, k = cfg.get("n_routed_experts") or 0, cfg.get("num_experts_per_tok") or 0
    active = total - routed + (routed * k // E if E else 0)
    return {"total": total, "active": active}


def _mean_sd(values: Sequence[float], digits: int) -> str:
    """``mean`` of one value, ``mean ± sd`` (sample standard deviation) of several, ``-`` of none."""
    if not values:
        return "-"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _run_figures(run: Path) -> dict:
    """The numbers of one ablation run folder (missing ones absent)."""
    curves = read_scalars(run / "train" / "tb")
    fig = {f"{split}/{t}": curves[f"{split}/loss/{t}"][-1][1] for split in ("train", "valid")
           for t in ("asr", "tts", "text_lm") if curves.get(f"{split}/loss/{t}")}
    if (run / "train" / "model").is_dir():
        fig["params"] = parameter_counts(run / "train" / "model")
    asr = [_load(p) for p in sorted((run / "score").glob("asr_*/summary.json"))]
    tts = [r for p in sorted((run / "score").glob("tts_*/summary.json")) for r in _load(p)
           if r["audio"] == "synthesized"]
    slm = [_load(p) for p in sorted((run / "score").glob("slm_*/summary.json"))]
    if asr:
        fig["asr"] = float(asr[0]["error_rate"])
    if tts:
        fig["tts"] = float(tts[0]["wer"])
    if slm:
        fig["pairs"], fig["pairs_ci"] = float(slm[0]["accuracy"]), slm[0]["ci95"]
    seed = _training_seed(run)
    if seed is not None:
        fig["seed"] = seed
    return fig


def _training_seed(run: Path) -> Optional[int]:
    """The ``seed:`` of the hparams SpeechBrain saved with the run (overrides applied), if any."""
    saved = run / "train" / "hyperparams.yaml"
    if not saved.is_file():
        return None
    # a regex, not a YAML load: the file holds !apply / !ref tags that would build objects
    found = re.search(r"^seed:\s*(\d+)\s*(#.*)?$", saved.read_text(), re.M)
    return int(found.group(1)) if found else None


def _per_seed_table(groups: Dict[str, List[dict]]) -> List[str]:
    """``ASR WER % / pairs %`` of every run, one column per seed: the paired view behind the means.

    Runs whose seed is unknown are left out (a column per seed would fold them together); none known: no table.
    """
    seeds = sorted({f["seed"] for figs in groups.values() for f in figs if "seed" in f})
    if not seeds:
        return []
    head = ["", "ASR WER % / spoken-LM pairs % of each seed (the seed sets initialisation and batch order, so "
            "runs in one column saw the same batches):", "",
            "| run | " + " | ".join(f"seed {s}" for s in seeds) + " |",
            "|---|" + "---:|" * len(seeds)]
    rows = []
    for name, figs in groups.items():
        if not any("seed" in f for f in figs):
            continue
        cells = []
        for seed in seeds:
            f = next((f for f in figs if f.get("seed") == seed), None)
            cells.append("-" if f is None else
                         " / ".join(f"{f[k]:.2f}" if k in f else "-" for k in ("asr", "pairs")))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + rows


def ablation_section(runs: Sequence[Tuple[str, Path]], title: str = "Ablation") -> str:
    """One table row per run name (``train/``, ``score/{asr,tts,slm}_*`` in each folder).

    Several folders under one name (seeds) make one row of means ± sample standard deviations, and a table
    of each seed's figures follows; a single folder's pair accuracy keeps its 95 % CI.
    """
    head = ["## " + title, "",
            "| run | seeds | params total | params active / token | train loss asr / tts / text_lm | "
            "valid loss asr / tts / text_lm | ASR WER % | TTS judge WER % | spoken-LM pairs % [95 % CI] |",
            "|---|---:|---:|---:|---|---|---:|---:|---|"]
    groups: Dict[str, List[dict]] = {}
    for name, run in runs:
        groups.setdefault(name, []).append(_run_figures(Path(run)))
    rows = []
    for name, figs in groups.items():
        def values(key):
            return [f[key] for f in figs if key in f]

        def losses(split):
            return " / ".join(_mean_sd(values(f"{split}/{t}"), 3) for t in ("asr", "tts", "text_lm"))

        params = values("params")
        total, active = (f"{params[0][k]:,}" if params else "-" for k in ("total", "active"))
        pairs = _mean_sd(values("pairs"), 2)
        if len(values("pairs")) == 1:
            lo, hi = values("pairs_ci")[0]
            pairs += f" [{lo:.1f}-{hi:.1f}]"
        rows.append(f"| {name} | {len(figs)} | {total} | {active} | {losses('train')} | {losses('valid')} | "
                    f"{_mean_sd(values('asr'), 2)} | {_mean_sd(values('tts'), 2)} | {pairs} |")
    if any(len(figs) > 1 for figs in groups.values()):
        rows += _per_seed_table(groups)
    return "\n".join(head + rows + [""])


def update_section(results_md, name: str, body: str) -> Path:
    """Replace (or append) the block between ``<!-- begin NAME -->`` and ``<!-- end NAME -->``, atomically."""
    path = Path(results_md)
    text = path.read_text() if path.is_file() else "# Results\n"
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return atomic_write_text(path, text if text.endswith("\n") else text + "\n")


def _results(args) -> None:
    exp, md = Path(args.exp), Path(args.results)
    image = None
    png = plot_curves(read_scalars(exp / "train" / "tb"), exp / "curves.png", title=f"{args.section} training")
    if png is not None:
        image = f"{args.section}_curves.png"
        shutil.copyfile(png, md.parent / image)
    update_section(md, args.section, results_section(exp, image, args.title or f"{args.section} run"))
    print(f"updated section {args.section!r} of {md}")


def _ablation(args) -> None:
    runs = []
    for spec in args.run:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--run wants NAME=FOLDER, got {spec!r}")
        runs.append((name, Path(folder)))
    body = ablation_section(runs, args.title or "Ablation")
    if args.notes:
        body += "\n" + Path(args.notes).read_text()
    update_section(args.results, args.section, body)
    print(f"updated section {args.section!r} of {args.results}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m most_speech.recipes.report", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("results", help="one experiment's scores and curves")
    r.add_argument("--exp", required=True, help="experiment folder (train/, score/)")
    a = sub.add_parser("ablation", help="a table of several runs")
    a.add_argument("--run", action="append", required=True, help="NAME=FOLDER (repeatable)")
    a.add_argument("--notes", help="markdown appended under the table")
    for sp in (r, a):
        sp.add_argument("--results", required=True, help="RESULTS.md to update")
        sp.add_argument("--section", required=True, help="section name (mini, ablation, ...)")
        sp.add_argument("--title")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (_results if args.cmd == "results" else _ablation)(args)


if __name__ == "__main__":
    main()
