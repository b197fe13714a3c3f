"""nerfgan: distil EG3D into a pose-conditioned convolutional generator and deploy it.

Importing this package pulls in nothing heavy; each stage lives in its own sub-package
(``nerfgan.teacher``, ``nerfgan.student``, ...).
"""

__version__ = "0.1.0"
