"""The analytic scene family (exact 3D ground truth) and the fitting of an EG3D teacher to it."""
