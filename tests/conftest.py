import os
import sys

# Tests import helpers from this folder (multiprocess.py) and run workers in spawned processes.
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("OMP_NUM_THREADS", "1")
