"""Bad input and bad luck under `torchrun --nproc_per_node 2` (CPU, gloo): each ends in one line, never a
hang, and leaves nothing that blocks the next run."""

from __future__ import annotations

import json
import os
import signal

import launchkit as launch
from trainkit import TINY_RUN, cli, read_json


def test_a_launch_over_a_folder_with_foreign_files_is_refused_once(tmp_path, tiny_model_dir, sft_data):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file\n")
    code, printed = launch.run("sft", "--model", tiny_model_dir, "--data", sft_data, "--out", out, "--max-steps", "2",
                               *TINY_RUN, timeout=300)
    assert code != 0
    errors = launch.error_lines(printed)
    assert len(errors) == 1 and "holds files that pbt did not write" in errors[0], printed  # rank 0 only
    assert "pbt_cli/" not in printed and "exitcode  : 2" in printed, printed  # no rank's traceback; rank 0 said 2
    assert {p.name for p in out.iterdir()} == {"notes.txt"}  # untouched, no lock left
    assert (out / "notes.txt").read_text() == "a user's file\n"


def test_a_rank_killed_mid_training_fails_the_launch_in_one_line_and_the_rerun_takes_its_lock(
        tmp_path, tiny_model_dir, sft_data):
    out, log = tmp_path / "run", tmp_path / "launch.log"
    args = ("sft", "--model", tiny_model_dir, "--data", sft_data, "--out", out, "--max-steps", "40",
            "--save-steps", "100", *TINY_RUN)
    process = launch.start(*args, log=log)
    try:
        launch.wait_for(lambda: launch.training_started(out, log), 300, "the first training step")
        holder = json.loads((out / ".pbt-lock").read_text())["pid"]  # rank 0 holds the lock
        os.kill(holder, signal.SIGKILL)
        code = process.wait(timeout=120)  # the other rank does not hang in its collective
    except BaseException:
        process.kill()
        raise
    printed = log.read_text()
    assert code != 0, printed
    errors = launch.error_lines(printed)
    assert len(errors) == 1 and "another process of this launch stopped or died" in errors[0], printed
    assert "run the same launch command again" in errors[0]
    assert (out / ".pbt-lock").exists()  # the dead rank's lock: the rerun must not be blocked by it

    # the rerun (one process here, to keep the launches few): not blocked, the dead rank's lock is taken over
    code, printed = cli(*args)
    assert code == 0, printed
    assert "taking over the lock" in printed, printed
    manifest = read_json(out / "manifest.json")
    assert (manifest["status"], manifest["global_step"]) == ("complete", 40)
    assert not (out / ".pbt-lock").exists()
