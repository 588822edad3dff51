"""The notebook layer: what every notebook in ``notebooks/`` calls (settings, runs, tables,
checks, figures, report files); ``from crossmodal import notebook as cm``.

A notebook is thin: its ``parameters`` cell holds flat values (``profile``, ``tasks``,
``seeds``, ``epochs``, ``output_dir``, ...), and everything else is a call into this layer
and into its one study (:mod:`crossmodal.studies`)::

    nb = cm.settings("main_results", profile, tasks=tasks, seeds=seeds, epochs=epochs,
                     output_dir=output_dir)       # defaults from the library, data checked
    report = cm.Report(nb, parameters=dict(profile=profile, tasks=tasks, ...))
    runs = cm.run_grid(nb, [cm.Variant("nft", "nft"), cm.Variant("scratch", "scratch")], report)
    table = cm.compare_with_paper(runs, profile=nb.profile)  # paper value beside ours, ranks
    report.write(table, summary="...")           # reports/<notebook>/<profile>/

One module per job:

* :mod:`~crossmodal.notebook.settings`: :func:`settings`, :class:`NotebookSettings`, the
  notebooks' defaults (:data:`NOTEBOOKS`), where reports go;
* :mod:`~crossmodal.notebook.grid`: :class:`Variant`, :func:`plan_grid`, :func:`run_grid`
  (train, or collect from a ``crossmodal sweep`` runs folder), method options per profile;
* :mod:`~crossmodal.notebook.tables`: :func:`compare_with_paper`, reference rows, formatting,
  :class:`Check` and the direction checks (paired verdicts over (task, seed) pairs);
* :mod:`~crossmodal.notebook.plots`: :func:`plot_curves`, :func:`plot_bars`;
* :mod:`~crossmodal.notebook.report`: :class:`Report` and the report folder's files.

The papers' numbers come from :mod:`crossmodal.paper_tables` (re-exported here). This layer
imports nothing from :mod:`crossmodal.studies` (the layer above it).
"""

from crossmodal.notebook.grid import (  # noqa: F401
    DRY_RUN_STATUS,
    METHOD_PROFILE_OPTIONS,
    PlannedRun,
    Variant,
    available_methods,
    is_dry_run,
    load_splits,
    main_variants,
    method_config,
    method_options,
    plan_grid,
    run_grid,
    run_row,
    slug,
)
from crossmodal.notebook.plots import (  # noqa: F401
    plot_bars,
    plot_curves,
)
from crossmodal.notebook.report import (  # noqa: F401
    COLLECT_CLAIM,
    REPORT_FILES,
    RESULTS_SCHEMA,
    Report,
    collect_check,
)
from crossmodal.notebook.settings import (  # noqa: F401
    MAIN_METHODS,
    NOTEBOOKS,
    ORCA_ABLATION_TASKS,
    REPORTS_ENV,
    SMOKE_TASKS,
    NotebookDefaults,
    NotebookSettings,
    as_list,
    default_seeds,
    display_path,
    register_notebook,
    repo_root,
    reports_root,
    require_data,
    settings,
)
from crossmodal.notebook.tables import (  # noqa: F401
    CHECK_KINDS,
    Check,
    check_direction,
    compare_with_paper,
    describe_model,
    describe_task,
    differences_check,
    epoch_frame,
    epoch_summary,
    fmt_value,
    format_table,
    markdown_table,
    mean_pm_std,
    pairwise_check,
    paper_wins,
    rank_within,
    records,
    reference_table,
    status_of,
    verdict_check,
    with_reference,
)
from crossmodal.paper_tables import (  # noqa: F401
    MAIN_TABLES,
    NB360_TASKS,
    PDEBENCH_TASKS,
    PaperValue,
    main_paper_value,
    paper_main_table,
    paper_notes,
    paper_table,
    paper_value,
)
