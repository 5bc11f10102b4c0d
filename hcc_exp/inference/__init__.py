"""Use of a trained run: restore its network and predict new patients.

* :mod:`~hcc_exp.inference.checkpoint`: ``load_trained_network`` (a ``best.ckpt`` -> network + config).
* :mod:`~hcc_exp.inference.predict`: ``Predictor``, ``predict_patient`` / ``predict_cohort``.

It sits above training (it rebuilds the Lightning module) and evaluation (the run's risk model,
:mod:`hcc_exp.evaluation.risk_model`), and below interpretability, which explains what it loads.
"""
