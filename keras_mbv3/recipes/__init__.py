"""End-to-end jobs: data, float training, QAT, export, evaluation, reports, the ``mbv3`` CLI."""
