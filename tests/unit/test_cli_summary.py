"""The human-readable summary of `recast swap` names what a user must know without --json."""

from __future__ import annotations

from recast.cli.swap import print_summary


def _summary(**extra):
    return {"qc": {"verdict": "pass", "reasons": []}, "output": "/out/x.mp4", "run_id": "r", "shot_id": "s", "frames": 50, "fps": "25",
            "avg_fps": 5.0, "swapped_frames": 25, "passthrough_frames": 25, "stages": {"swap": 1000.0}, **extra}


def test_the_summary_lists_the_frames_left_untouched_after_a_cut(capsys):
    print_summary(_summary(segments_without_person=[{"start": 25, "end": 50, "rate": "25"}]), None)
    assert "untouched: frames 25-49 (the chosen person is not in them)" in capsys.readouterr().out


def test_no_untouched_line_when_the_person_is_everywhere(capsys):
    print_summary(_summary(), None)
    assert "untouched" not in capsys.readouterr().out
