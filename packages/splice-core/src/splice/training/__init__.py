"""Training: configs (torch-free), the trainer, schedules, batch streams, run artefacts.

Import the parts you need: ``splice.training.configs`` (configs), ``splice.training.trainer``
(``Trainer``), ``splice.training.experiment`` (``run_experiment``).
"""
