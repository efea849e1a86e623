"""Config files, one per experiment family (installed by a wheel as ``flowjax.configs``).

Each file defines ``get_config(arg=None)``; load one with
``flowjax.config_files.load_config("toy2d_rf")`` or ``flowjax train --config=toy2d_rf``.
"""
