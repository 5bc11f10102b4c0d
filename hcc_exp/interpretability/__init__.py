"""Interpretability and use of a trained run: 3D Grad-CAM with region shares, and prediction for new patients.

* :mod:`~hcc_exp.interpretability.regions`: pure region statistics of a CAM (energy, hit rate).
* :mod:`~hcc_exp.interpretability.cam`: Grad-CAM per head and phase, overlays, ``run_cams``.
* :mod:`~hcc_exp.interpretability.risk_model`: risk cut-offs and Breslow baselines of a run.
* :mod:`~hcc_exp.interpretability.predict`: ``predict_patient`` / ``predict_cohort``.
* :mod:`~hcc_exp.interpretability.checkpoint`: restoring a trained network and its run folder.
"""
