"""The benchmarks, apart from the entry points in scripts/: ``python -m scripts.bench`` (from the repository
root) writes the report of the sections below; cost and flow are benchmarks of their own
(``python -m scripts.bench.cost``, ``python -m scripts.bench.flow``).

- ``__main__``, ``cost``, ``flow``: the command lines, each checked before its body is imported (a
  refusal takes 0.05 s, not the 2-5 s of torch's and the sections' imports);
- ``_sections``: the sections' table and the report's header; ``_cost``, ``_flow``: the bodies of the
  other two;
- ``figure1``, ``size``, ``ensemble``, ``stiff``, ``gpu``, ``run``: one section each;
- ``common``: what several sections share (timing, tables, the teacher setting, the Figure 1 ensemble).

A package run with ``-m`` rather than ``python scripts/bench.py``: its modules import each other by one
absolute name (``scripts.bench.common``) whichever of them is run, with nothing added to sys.path.
"""
