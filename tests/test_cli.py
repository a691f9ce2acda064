"""The command line: golden path, help, and every bad input (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TWO
from PIL import Image

from pixelreason.cli import main
from pixelreason.prompting import MAX_QUERY_CHARS


def test_segment_golden_path_writes_masks_overlay_and_json(
    trained_dir: Path, example_png: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelreason.cli",
            "segment",
            str(example_png),
            TWO[0],
            "--out",
            str(out),
            "--model",
            str(trained_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == TWO[1]
    assert sorted(p.name for p in out.iterdir()) == [
        "mask_0.png",
        "mask_1.png",
        "overlay.png",
        "result.json",
    ]
    data = json.loads((out / "result.json").read_text())
    assert data["query"] == TWO[0] and len(data["targets"]) == 2
    mask = Image.open(out / "mask_0.png")
    assert mask.size == Image.open(example_png).size and mask.mode == "L"


def test_help_explains_each_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["segment", "--help"], ["chat", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "mask_K.png" in text and "--model" in text and "/reset" in text


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    unsupported = tmp_path / "image.ppm"
    Image.new("RGB", (4, 4)).save(unsupported)
    return {"corrupt": corrupt, "unsupported": unsupported, "missing": tmp_path / "missing.png"}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "image not found"),
        ("corrupt", "cannot read image"),
        ("unsupported", "unsupported image format"),
    ],
)
def test_bad_images(case: str, message: str, files, trained_dir, capsys) -> None:
    err = _bad(["segment", str(files[case]), "where?", "--model", str(trained_dir)], capsys)
    assert message in err


def test_bad_queries(example_png: Path, trained_dir: Path, capsys) -> None:
    assert "query is empty" in _bad(
        ["segment", str(example_png), "  ", "--model", str(trained_dir)], capsys
    )
    long_query = "x" * (MAX_QUERY_CHARS + 1)
    assert "too long" in _bad(
        ["segment", str(example_png), long_query, "--model", str(trained_dir)], capsys
    )


def test_bad_model_paths(example_png: Path, tmp_path: Path, capsys) -> None:
    assert "not found" in _bad(
        ["segment", str(example_png), "q", "--model", str(tmp_path / "nope")], capsys
    )
    assert "not a pixelreason model" in _bad(
        ["segment", str(example_png), "q", "--model", str(tmp_path)], capsys
    )
    assert "unknown model" in _bad(["segment", str(example_png), "q", "--model", "nope"], capsys)
    assert "--presence-threshold must be between 0 and 1" in _bad(
        ["segment", str(example_png), "q", "--model", "random:tiny", "--presence-threshold", "3"],
        capsys,
    )
    assert "--colour-threshold must be between 0 and 1" in _bad(
        ["segment", str(example_png), "q", "--model", "random:tiny", "--colour-threshold", "-1"],
        capsys,
    )
    assert "--request-threshold must be between 0 and 1" in _bad(
        ["segment", str(example_png), "q", "--model", "random:tiny", "--request-threshold", "2"],
        capsys,
    )
    assert "--instance-overlap must be between 0 and 1" in _bad(
        ["segment", str(example_png), "q", "--model", "random:tiny", "--instance-overlap", "5"],
        capsys,
    )
    for question in ("Where are they?", "Where are the {plural} {x}?", "{"):
        assert "--instance-question takes a question with {plural}" in _bad(
            ["segment", str(example_png), "q", "--model", "random:tiny"]
            + ["--instance-question", question],
            capsys,
        )
    assert "--snap-scale must be between 0 and 100000" in _bad(
        ["segment", str(example_png), "q", "--model", "random:tiny", "--snap-scale", "-3"],
        capsys,
    )


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["segment"])
    assert exit_info.value.code == 2


def test_chat_session(trained_dir: Path, example_png: Path, tmp_path: Path) -> None:
    questions = "\n".join([TWO[0], "/reset", TWO[0], "/quit"]) + "\n"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelreason.cli",
            "chat",
            str(example_png),
            "--model",
            str(trained_dir),
            "--out",
            str(tmp_path),
        ],
        input=questions,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(TWO[1]) == 2 and "(new conversation)" in proc.stdout
    assert (tmp_path / "turn_2" / "overlay.png").is_file()
