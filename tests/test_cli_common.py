"""``console_to``: what the commands print goes to a file while it is active, and to the terminal again after."""

from __future__ import annotations

from rich.table import Table

from stickerconv.cli.common import console, console_to


def test_console_output_goes_to_the_file_and_only_while_diverted(tmp_path, capsys) -> None:
    table = Table("metric", "score")
    table.add_row("r10@1", "0.30")
    with console_to(tmp_path / "logs" / "step.log") as log:
        console.print("[bold]scored[/] 3 samples [r10@1|version:x]", markup=False)
        console.print(table)
        console.print_json('{"pool": 116}')
    console.print("after the block")
    text = log.read_text(encoding="utf-8")
    assert "[bold]scored[/] 3 samples [r10@1|version:x]" in text and "│ r10@1  │ 0.30  │" in text
    assert '"pool": 116' in text and "\x1b[" not in text  # plain text: no terminal codes
    assert capsys.readouterr().out == "after the block\n" and "after the block" not in text
