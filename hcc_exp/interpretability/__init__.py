"""Interpretability of a trained run: 3D Grad-CAM with region shares.

* :mod:`~hcc_exp.interpretability.gradcam`: raw 3D Grad-CAM per head and phase (MONAI).
* :mod:`~hcc_exp.interpretability.regions`: pure region statistics of a CAM (energy, hit rate).
* :mod:`~hcc_exp.interpretability.overlay`: CT + CAM + contour overlay figures (PNG).
* :mod:`~hcc_exp.interpretability.region_report`: Supplementary Table 3D as Markdown and JSON.
* :mod:`~hcc_exp.interpretability.cam`: ``run_cams`` (``hcc-exp cam``) and ``write_patient_cams``
  (the explanation ``hcc-exp predict`` writes beside a prediction).

The trained network comes from :mod:`hcc_exp.inference`, which sits below this package.
"""
