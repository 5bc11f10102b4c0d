"""hcc-exp: an experiment platform for multi-task deep learning on triphasic liver CT.

Predicts microvascular invasion (MVI), overall survival (OS) and recurrence-free
survival (RFS) of hepatocellular carcinoma from arterial, portal venous and
delayed CT, following the multi-task 3D DenseNet method in ``../shared/paper``.
"""

__version__ = "0.1.0"
