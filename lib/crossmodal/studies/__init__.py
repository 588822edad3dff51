"""The studies: one module per paper and notebook, above the notebook layer.

* :mod:`~crossmodal.studies.orca`: ORCA's ablations (``orca_ablations``) and its alignment
  check (``00_quickstart``);
* :mod:`~crossmodal.studies.main_results`: the main tables' claims (``main_results``);
* :mod:`~crossmodal.studies.pare`: PaRe's ablations (``pare_k_schedules``);
* :mod:`~crossmodal.studies.mona`: MoNA's discrepancy (``mona_discrepancy``);
* :mod:`~crossmodal.studies.recraft`: RECRAFT's bound and kappa (``recraft_bound_tightness``,
  ``recraft_kappa_sensitivity``);
* :mod:`~crossmodal.studies.gap_adaptive`: the gap-adaptive proposal (``modality_gap``).

Each notebook imports the notebook layer and its one study::

    from crossmodal import notebook as cm
    from crossmodal.studies import pare as study

The names below are re-exported for code written against the former single module
(``from crossmodal import studies as st``); new code imports the study module.
"""

from crossmodal.notebook import records  # noqa: F401
from crossmodal.paper_tables import paper_notes  # noqa: F401
from crossmodal.studies.gap_adaptive import (  # noqa: F401
    check_weights,
    gap_estimates,
    gap_variants,
    plot_weights,
    weight_frame,
)
from crossmodal.studies.main_results import (  # noqa: F401
    MAIN_CLAIMS,
)
from crossmodal.studies.mona import (  # noqa: F401
    check_approximation,
    check_discrepancy_trend,
    discrepancy_approximation,
    discrepancy_frame,
    discrepancy_probe,
    mona_variants,
    plot_discrepancy,
)
from crossmodal.studies.orca import (  # noqa: F401
    ALIGN_EPOCH_GRID,
    ORCA_ABLATION_FIGURES,
    ORCA_ABLATIONS,
    ablation_table,
    alignment_frame,
    check_alignment_lowers_otdd,
    orca_ablation_checks,
    orca_ablation_finding,
    orca_ablation_variants,
    run_ablations,
)
from crossmodal.studies.pare import (  # noqa: F401
    PARE_DEFAULTS,
    PARE_TABLES,
    check_gradual_schedules,
    k_wide,
    pare_ablation_checks,
    pare_ablation_table,
    pare_k_table,
    pare_paper_table,
    pare_paper_value,
    pare_variants,
    plot_k_schedules,
    run_pare_ablations,
)
from crossmodal.studies.recraft import (  # noqa: F401
    BOUND_COLUMNS,
    KAPPA_GRIDS,
    PROXY_KAPPA_GRID,
    bound_frame,
    bound_runs,
    bound_step_checks,
    bound_table,
    check_bound_above_loss,
    check_gap_claim,
    check_kappa_certified,
    kappa_checks,
    kappa_proxy_sweep,
    kappa_results,
    kappa_table,
    kappa_variants,
    plot_bound,
    plot_kappa,
    recraft_gap_claim,
    recraft_kappa_range,
    recraft_paper_kappas,
)
