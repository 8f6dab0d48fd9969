"""``oir-edit batch``'s server list (``--server`` repeated, ``--servers FILE``), without ComfyUI.

The scheduling itself runs against real servers in ``tests/integration/test_batch_servers.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oir_cli.cli import build_parser, main
from oir_cli.scheduler import server_urls
from oir_cli.specs import SpecError


def _args(tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    return build_parser("batch").parse_args([str(tmp_path), "--out", str(tmp_path / "out"), *extra])


def test_servers_file_comments_blank_lines_and_flags_are_merged_in_order(tmp_path: Path) -> None:
    listed = tmp_path / "servers.txt"
    listed.write_text(
        "# GPUs of box 1\nhttp://10.0.0.5:8188\n\n  10.0.0.5:8189/   # no scheme: http\nhttps://gpu.example:443\n",
        encoding="utf-8",
    )
    args = _args(tmp_path, "--server", "127.0.0.1:8188", "--servers", str(listed))
    assert server_urls(args) == [
        "http://127.0.0.1:8188",
        "http://10.0.0.5:8188",
        "http://10.0.0.5:8189",
        "https://gpu.example:443",
    ]
    assert args.retries == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("http://a:8188\nhttp://a:8188/\n", "line 2: http://a:8188/ is listed twice"),
        ("# nothing\n\n", "lists no server"),
        ("http://a:81x8\n", "line 1: 'http://a:81x8': the port is not a number"),
        ("ftp://a:8188\n", "line 1: 'ftp://a:8188' is not a server address"),
    ],
)
def test_a_bad_servers_file_is_refused_naming_the_line(tmp_path: Path, content: str, expected: str) -> None:
    listed = tmp_path / "servers.txt"
    listed.write_text(content, encoding="utf-8")
    with pytest.raises(SpecError, match="--servers") as refused:
        server_urls(_args(tmp_path, "--servers", str(listed)))
    assert expected in str(refused.value)


def test_the_command_refuses_a_negative_retry_count_before_contacting_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "a.yaml").write_text("image: a.png\nprompt: a dog\nedits: ['dog=cat:m.png']\n", encoding="utf-8")
    code = main(
        [
            "batch",
            str(specs),
            "--out",
            str(tmp_path / "out"),
            "--server",
            "127.0.0.1:9",
            "--server",
            "127.0.0.1:10",
            "--retries",
            "-1",
        ]
    )
    assert code == 2
    assert "--retries -1: must be 0 or more" in capsys.readouterr().err
