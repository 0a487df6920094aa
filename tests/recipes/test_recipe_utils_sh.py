"""The shared recipe shell helpers (tools/recipe_utils.sh): option parsing, stage selection, done markers."""
import subprocess
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[2] / "tools" / "recipe_utils.sh"


def _bash(script: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    prog = f'set -euo pipefail; . "{UTILS}"\n{script}'
    return subprocess.run(["bash", "-c", prog, "recipe", *args], capture_output=True, text=True, cwd=cwd, timeout=30)


def test_parse_options_overrides_defined_variables():
    res = _bash('stage=0; my_dir=exp; words="a b"; parse_options "$@"; echo "$stage|$my_dir|$words"',
                "--stage", "3", "--my-dir=/x y", "--words", "c d e")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "3|/x y|c d e"


@pytest.mark.parametrize("args, message", [(("--nope", "1"), "unknown option --nope"),
                                           (("--stage",), "needs a value"),
                                           (("positional",), "unexpected argument")])
def test_parse_options_rejects_bad_arguments(args, message):
    res = _bash('stage=0; parse_options "$@"; echo ran', *args)
    assert res.returncode != 0 and "ran" not in res.stdout
    assert message in res.stderr


def test_run_stage_selects_the_range_and_logs():
    res = _bash('stage=2; stop_stage=3; for n in 1 2 3 4; do run_stage $n "step $n" && echo "ran $n"; done; true')
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["ran 2", "ran 3"]
    assert "Stage 2: step 2" in res.stderr and "Stage 3: step 3" in res.stderr and "Stage 1" not in res.stderr


def test_done_markers_skip_finished_work(tmp_path):
    script = 'for i in 1 2; do is_done "$1" || { echo work; mark_done "$1"; }; done'
    res = _bash(script, str(tmp_path / "step"))
    assert res.stdout.split() == ["work"]
    assert (tmp_path / "step" / ".done").is_file()


def test_require_and_run_logged(tmp_path):
    res = _bash(f'require "{tmp_path}/missing.txt"')
    assert res.returncode != 0 and "missing input" in res.stderr
    log = tmp_path / "logs" / "x.log"
    res = _bash(f'run_logged "{log}" bash -c "echo hello; exit 3"')
    assert res.returncode == 3 and "hello" in res.stdout and "hello" in log.read_text()
    bar = r'printf "step 1/3\rstep 2/3\rstep 3/3\nINFO done\n"'
    res = _bash(f"run_logged '{log}' bash -c '{bar}'")
    assert res.returncode == 0 and all(f"step {i}/3" in res.stdout for i in (1, 2, 3))  # the terminal: all
    assert log.read_text().splitlines()[-2:] == ["step 3/3", "INFO done"]  # the file: the bar's last state


def test_run_logged_keeps_what_a_redirected_output_file_already_holds(tmp_path):
    """`bash run.sh > run.log`: the stages' own lines before and after a logged command stay in run.log (tee
    must write through the inherited descriptor; reopening /dev/fd/N truncates the file it points to)."""
    out, log = tmp_path / "run.log", tmp_path / "stage.log"
    script = f'{{ echo "Stage 0 done"; run_logged "{log}" bash -c "echo work"; echo "Stage 1 done"; }} > "{out}"'
    res = _bash(script)
    assert res.returncode == 0, res.stderr
    assert out.read_text().splitlines() == ["Stage 0 done", "work", "Stage 1 done"]
    assert log.read_text().splitlines()[-1] == "work"


RECIPES = sorted((UTILS.parents[1] / "recipes").glob("*/run.sh")) + [UTILS.parents[1] / "templates" / "run.sh"]


@pytest.mark.parametrize("run_sh", RECIPES, ids=lambda p: p.parent.name)
def test_every_recipe_lists_its_options_and_rejects_unknown_ones(run_sh):
    root = UTILS.parents[1]
    # as a user types it from the repository root: the script cds to its folder before it reads itself
    helped = subprocess.run(["bash", str(run_sh.relative_to(root)), "--help"], cwd=root, capture_output=True,
                            text=True, timeout=30)
    assert helped.returncode == 0 and "--stage=" in helped.stdout and "--stop_stage=" in helped.stdout
    header = run_sh.read_text().splitlines()[1].lstrip("# ")
    assert helped.stdout.startswith(header) and "set -euo" not in helped.stdout and not helped.stderr
    bad = subprocess.run(["bash", str(run_sh), "--no_such_option", "1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option --no_such_option" in bad.stderr
    missing = subprocess.run(["bash", str(run_sh), "--stage", "0"], capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "ERROR" in missing.stderr  # no corpus given: a clear message, no work
