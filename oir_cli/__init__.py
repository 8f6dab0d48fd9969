"""``oir-edit``: the command-line client of the OIR node pack.

It runs OIR edits on a ComfyUI server (one it starts, or one already running) through ComfyUI's
HTTP and websocket API, so it imports neither ComfyUI nor torch: ``oir-edit --help`` and every
refusal of a bad input answer at once. The engine is :mod:`oir_core`; from it the client uses only
its torch-free modules (option vocabularies, prompt plans, step checks, errors).

Modules: :mod:`oir_cli.cli` (the command), :mod:`oir_cli.arguments` (its flags),
:mod:`oir_cli.specs` (the edit spec model), :mod:`oir_cli.discovery` (spec files and batch folders),
:mod:`oir_cli.checks` (checks without a server), :mod:`oir_cli.filling` (the workflow a spec fills),
:mod:`oir_cli.runner` (one edit on a server), :mod:`oir_cli.batch` (a batch of them on one server),
:mod:`oir_cli.scheduler` (a batch over many servers),
:mod:`oir_cli.results` (report.json and error.txt), :mod:`oir_cli.pictures` (reading image and mask
files as a person sees them), :mod:`oir_cli.client` (ComfyUI's API), :mod:`oir_cli.server`
(launching ComfyUI), :mod:`oir_cli.progress` (what the terminal shows), :mod:`oir_cli.export` (jobs
for hosted workers), :mod:`oir_cli.report_html` and :mod:`oir_cli.fidelity` (a batch's HTML report
and metrics).
"""
