#!/usr/bin/env bash
# `make test`: the unit/end-to-end tests and nbval of every notebook, in two pytest processes.
#
# Why two: nbval re-executes the notebooks, and with three smoke seeds per configuration
# (issue 15) they are most of the suite's time. The lanes are balanced with measured CPU
# seconds (one thread; smoke recipe of crossmodal.profiles: 3 MiniLM layers, 32-token
# proxy): the notebooks' runs, per-run CPU x the runs of each notebook's committed
# runs.csv, main_results ~610, modality_gap ~220, pare_k_schedules ~130, orca_ablations
# ~90, recraft_kappa_sensitivity ~70, recraft_bound_tightness ~56, mona_discrepancy ~35,
# 00_quickstart ~18 (plus ~10-30 s per notebook for its kernel, imports and studies);
# tests/ 577 s (measured: pytest tests, one thread, 985 tests). Lane A ~920 s + overheads,
# lane B ~890 s + overheads: each about 16 min of one core, half of running them in turn.
# Each lane is an ordinary pytest run (same options from pyproject.toml); the target fails
# when either lane fails.
# Run one lane alone with e.g.
#   .venv/bin/python -m pytest -q tests            # the unit and end-to-end tests
#   .venv/bin/python -m pytest -q notebooks/00_quickstart.ipynb
set -u
PY=${1:-.venv/bin/python}
logs=$(mktemp -d)
lane_a=(notebooks/main_results.ipynb notebooks/modality_gap.ipynb
        notebooks/orca_ablations.ipynb)
lane_b=(tests notebooks/pare_k_schedules.ipynb notebooks/recraft_bound_tightness.ipynb
        notebooks/mona_discrepancy.ipynb notebooks/00_quickstart.ipynb
        notebooks/recraft_kappa_sensitivity.ipynb)
# every notebook must be in one lane: a new notebook that is in neither would go untested
for nb in notebooks/*.ipynb; do
  case " ${lane_a[*]} ${lane_b[*]} " in
    *" $nb "*) ;;
    *) echo "tests/run_all.sh: $nb is in no lane; add it to lane_a or lane_b" >&2; exit 2 ;;
  esac
done
"$PY" -m pytest -q -p no:cacheprovider "${lane_a[@]}" > "$logs/a.log" 2>&1 &
pid_a=$!
"$PY" -m pytest -q "${lane_b[@]}" > "$logs/b.log" 2>&1 &
pid_b=$!
wait "$pid_a"; rc_a=$?
wait "$pid_b"; rc_b=$?
echo "=== lane A (notebooks: ${lane_a[*]}) exit $rc_a"; cat "$logs/a.log"
echo "=== lane B (${lane_b[*]}) exit $rc_b"; cat "$logs/b.log"
rm -rf "$logs"
[ "$rc_a" -eq 0 ] && [ "$rc_b" -eq 0 ]
