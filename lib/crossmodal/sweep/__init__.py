"""Scale a notebook out: its grid of runs as cluster jobs, then the notebook as the report.

::

    crossmodal sweep notebooks/main_results.ipynb --profile paper --executor slurm \
        --slurm-partition gpu --gpus-per-job 1 --timeout-min 240 --runs-dir runs/paper
    crossmodal sweep --status runs/paper          # pending / running / done / failed
    crossmodal reproduce --profile paper --runs-dir runs/paper   # collect every notebook

* :mod:`crossmodal.sweep.plan`: a run's identity (a stable hash of its full configuration);
* :mod:`crossmodal.sweep.grids`: each notebook's grid, from its own parameters cell and the
  library builders it calls;
* :mod:`crossmodal.sweep.jobs`: submission through submitit (``LocalExecutor`` on a
  workstation, ``SlurmExecutor`` on a cluster), the checkpointable job, the status.

The notebooks collect: with ``runs_dir`` set, :func:`crossmodal.notebook.run_grid` reads
each finished run instead of training and the report marks the missing ones.
"""
