"""The kit's Jupyter server config, read by ``make lab`` (``JUPYTER_CONFIG_PATH=jupyter``).

* Kernels talk to the server over IPC (local sockets) instead of TCP: ipykernel warns
  "Kernel is running over TCP without encryption" for every TCP kernel; local sockets are
  not reachable from the network, so there is nothing to encrypt and nothing to warn about.
* JupyterLab's settings overrides (``jupyter/lab/settings/overrides.json``): no "official
  Jupyter news?" pop-up and no update check on the first launch.
"""

from pathlib import Path

c = get_config()  # noqa: F821 - provided by traitlets when this file is loaded

c.KernelManager.transport = "ipc"
c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent / "lab" / "settings")
c.LabServerApp.app_settings_dir = c.LabApp.app_settings_dir
