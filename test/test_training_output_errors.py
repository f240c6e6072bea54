"""Training into a full or read-only output folder: one clear line, exit status 2, last checkpoint intact.

Runs in a private mount namespace (``unshare -m``) on a 256 KiB tmpfs, so the disk really is full or
read-only (permissions alone do not stop root).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from ros_harness import ROOT

SCENARIO = textwrap.dedent('''
    import subprocess, sys
    from pathlib import Path
    import torch
    from clip2scene_core.atomic_file import AtomicWriteError, torch_save_atomically

    folder = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)
    torch_save_atomically({"weights": torch.zeros(1000)}, folder / "last.pt", durable=True)
    try:  # fill the disk
        with open(folder / "filler", "wb", buffering=0) as filler:
            while True:
                filler.write(b"0" * 4096)
    except OSError:
        pass
    try:
        torch_save_atomically({"weights": torch.ones(20000)}, folder / "last.pt", durable=True)
        print("SAVED-ON-FULL-DISK")
    except AtomicWriteError as error:
        print("FULL:", error)
    print("INTACT:", torch.equal(torch.load(folder / "last.pt", weights_only=True)["weights"], torch.zeros(1000)))
    print("LEFTOVERS:", sorted(p.name for p in folder.glob(".*tmp")))

    def train(extra=()):
        result = subprocess.run([sys.executable, "-m", "clip2scene_core", "pretrain", "--config",
                                 "config/pretrain_tiny.yaml", "--out", str(folder / "run"), *extra],
                                capture_output=True, text=True)
        return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]

    print("CLI-FULL:", *train())
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    print("CLI-READONLY:", *train())
''')


def test_full_and_read_only_output_folders(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("unshare -m (a private mount namespace) is not allowed here")
    folder = tmp_path / "disk"
    folder.mkdir()
    result = subprocess.run(["unshare", "-m", sys.executable, "-c", SCENARIO, str(folder)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
             if ":" in line}
    assert "SAVED-ON-FULL-DISK" not in result.stdout
    assert "last.pt" in lines["FULL"] and "unchanged" in lines["FULL"]
    assert lines["INTACT"] == "True" and lines["LEFTOVERS"] == "[]"
    for key, reason in (("CLI-FULL", "No space left"), ("CLI-READONLY", "Read-only file system")):
        code, _, errors = lines[key].partition(" ")
        assert code == "2", lines[key]
        assert reason in errors and "not writable" in errors and "Traceback" not in errors, errors
        assert errors.count("', '") == 0, f"more than one line: {errors}"
