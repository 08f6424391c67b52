"""The benchmarks, apart from the entry points in scripts/: ``python -m scripts.bench`` (from the repository
root) writes the report of the sections below; cost and flow are benchmarks of their own
(``python -m scripts.bench.cost``, ``python -m scripts.bench.flow``).

- ``__main__``: the command line, the report's header, the sections' table;
- ``figure1``, ``size``, ``ensemble``, ``stiff``, ``gpu``, ``run``: one section each;
- ``common``: what several sections share (timing, tables, the teacher setting, the Figure 1 ensemble).

A package run with ``-m`` rather than ``python scripts/bench.py``: its modules import each other by one
absolute name (``scripts.bench.common``) whichever of them is run, with nothing added to sys.path.
"""
