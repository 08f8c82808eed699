"""Notebooks run by papermill for the demo and the jobs: kernel transport, cell hooks, HTML."""

from __future__ import annotations

import nbformat

from nbmlops.jobs.notebooks import html_copy, run_notebook


def test_kernel_runs_over_ipc_without_a_warning_and_cells_are_reported(settings, tmp_path, capfd):
    notebook = tmp_path / "small.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from ipykernel.kernelapp import IPKernelApp\nprint(IPKernelApp.instance().transport)"
        ),
        nbformat.v4.new_markdown_cell("not executed, not reported"),
        nbformat.v4.new_code_cell("6 * 7"),
    ]
    nbformat.write(nb, notebook)
    seen = []

    def on_cell_executed(cell, cell_index, execute_reply):
        seen.append((cell_index, execute_reply["content"]["status"], cell.outputs))

    output = run_notebook(
        notebook, tmp_path / "out" / "small.ipynb", settings, on_cell_executed=on_cell_executed
    )

    assert "without encryption" not in capfd.readouterr().err
    assert [(index, status) for index, status, _ in seen] == [(0, "ok"), (2, "ok")]
    # the hook sees each cell's outputs, complete
    assert seen[0][2][0]["text"] == "ipc\n"
    assert seen[1][2][0]["data"]["text/plain"] == "42"
    page = html_copy(output)
    assert page == tmp_path / "out" / "small.html"
    assert "42" in page.read_text() and "<html" in page.read_text()
