"""Interpretability of a trained run: 3D Grad-CAM with region shares.

* :mod:`~hcc_exp.interpretability.regions`: pure region statistics of a CAM (energy, hit rate).
* :mod:`~hcc_exp.interpretability.cam`: Grad-CAM per head and phase, overlays, ``run_cams``, and
  ``write_patient_cams`` (the explanation ``hcc-exp predict`` writes beside a prediction).

The trained network comes from :mod:`hcc_exp.inference`, which sits below this package.
"""
