"""Start-up failures of the node: exit status != 0 and one line naming the parameter or file, no traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ros_harness import ROOT

pytestmark = pytest.mark.usefixtures("ros_env")


def start_node(*parameters: str, debug: bool = False, params_file: bool = True) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "clip2scene_ros.segment_node"] + (["--debug"] if debug else [])
    argv += ["--ros-args"] + (["--params-file", str(ROOT / "config" / "segment.yaml")] if params_file else [])
    for parameter in parameters:
        argv += ["-p", parameter]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def assert_fails_with_one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode not in (0, None), result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert len(errors) == 1, f"expected one line, got:\n{result.stderr}"
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory, tiny_checkpoint):
    """Files a user might pass as the checkpoint by mistake."""
    import torch

    folder = tmp_path_factory.mktemp("bad_checkpoints")
    (folder / "notes.txt").write_text("these are not weights\n" * 20)
    (folder / "empty.pt").write_bytes(b"")
    state = torch.load(tiny_checkpoint, weights_only=True)
    weightless = dict(state, state_dict={k: v for k, v in list(state["state_dict"].items())[3:]})
    torch.save(weightless, folder / "missing_weights.pt")
    no_text_model = dict(state, text_encoder={"kind": "open_clip", "name": "ViT-S-32",
                                              "weights": str(folder / "absent_clip.pt")})
    torch.save(no_text_model, folder / "missing_text_weights.pt")
    return folder


@pytest.mark.parametrize("name, needles", [
    ("notes.txt", ["notes.txt", "not a readable clip2scene checkpoint"]),
    ("empty.pt", ["empty.pt", "empty file"]),
    (".", ["is a directory"]),
    ("absent.pt", ["absent.pt", "not found"]),
    ("missing_weights.pt", ["missing_weights.pt", "weights do not fit"]),
    ("missing_text_weights.pt", ["missing_text_weights.pt", "text encoder"]),
])
def test_a_bad_checkpoint_file_is_named_in_one_line(bad_checkpoints, name, needles):
    assert_fails_with_one_line(start_node(f"checkpoint:={bad_checkpoints / name}"), *needles)


def test_a_parameter_of_the_wrong_type_is_named_in_one_line(tiny_checkpoint):
    # Without the params file: rcl keeps the file's integer when -p gives the same name a string.
    result = start_node(f"checkpoint:={tiny_checkpoint}", "max_points:=many", params_file=False)
    assert_fails_with_one_line(result, "max_points", "INTEGER")


@pytest.mark.parametrize("parameter, needles", [
    ("voxel_size:=-1.0", ["voxel_size"]),             # out of the descriptor's range
    ("score_threshold:=3.0", ["score_threshold"]),
    ("device:=tpu", ["device", "tpu"]),
    ("device:=cuda:7", ["device", "cuda:7"]),          # no such GPU here
    ("reliability:=sometimes", ["reliability"]),
    ("intensity_scale:=bright", ["intensity_scale"]),
    ("prompt_templates:=['a {} {x}']", ["prompt_templates", "{x}"]),
    ("class_names:=['Car', 'car ']", ["class_names", "duplicates"]),
])
def test_a_bad_parameter_is_named_in_one_line(tiny_checkpoint, parameter, needles):
    assert_fails_with_one_line(start_node(f"checkpoint:={tiny_checkpoint}", parameter), *needles)


def test_debug_flag_shows_the_traceback(bad_checkpoints):
    result = start_node(f"checkpoint:={bad_checkpoints / 'notes.txt'}", debug=True)
    assert result.returncode != 0 and "Traceback" in result.stderr
