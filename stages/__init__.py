"""Pipeline stages, each run as ``python -m stages.<name>`` by ``dvc repro``."""
