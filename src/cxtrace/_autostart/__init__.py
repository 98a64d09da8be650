"""The directory ``cxtrace run`` puts first on ``PYTHONPATH``; see ``sitecustomize.py``."""
