"""Reference rows of the results table: what the benchmark can be solved with short of image models.

* :mod:`train.reference.objects`: the labelled objects of a catalog and their epochs,
  streamed (the frames are passed to a feature function, not kept).
* :mod:`train.reference.scene`: features of the static scene (per-band median coadds).
* :mod:`train.reference.difference_flux`: the PLAsTiCC difference fluxes of the epochs
  a catalog rendered, and each object's host photo-z.
* :mod:`train.reference.lightcurve_features`: summary features of those light curves.
* :mod:`train.reference.boosting`: gradient boosting with early stopping on the inner
  validation split.
* :mod:`train.reference.flux_lstm`: the light-curve LSTM on difference fluxes with errors.
* :mod:`train.reference.rows`: one reference row over the table's folds.
"""
