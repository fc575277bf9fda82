"""``python -m molsym.train CONFIG.yaml``: train a model (the same as ``molsym train``)."""
import sys

from molsym.train.cli import train_main

sys.exit(train_main())
